"""A workload for the container tests, run by the image's own Python: TLS client handshakes
through the image's libssl (SSL_do_handshake, the compose configuration's example target).
The peer end is closed, so each handshake fails at once: no server, no certificate, no
network, and SSL_do_handshake still runs every time.

    python3 tls_handshakes.py SECONDS   handshake every 50 ms for SECONDS, then exit
"""

import socket
import ssl
import sys
import time

context = ssl.create_default_context()
deadline = time.monotonic() + float(sys.argv[1])
count = 0
while True:
    ours, theirs = socket.socketpair()
    theirs.close()
    try:
        context.wrap_socket(ours, server_hostname="peer.invalid")
    except (ssl.SSLError, OSError):
        pass
    ours.close()
    count += 1
    if time.monotonic() >= deadline:
        break
    time.sleep(0.05)
print(f"{count} handshakes", flush=True)
