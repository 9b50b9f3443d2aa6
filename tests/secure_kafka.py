"""A dedicated local broker with TLS, SASL/SCRAM-SHA-512, mutual TLS and ACLs, for the
security tests: a CA and certificates made with openssl, SCRAM users and the ACLs of
deploy/k8s/overlays/strimzi/kafkausers.yaml applied through the Admin API."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from runtime_signals.config import load_config
from runtime_signals.devtools import localkafka
from runtime_signals.devtools.demo import create_topics
from runtime_signals.kafka.security import KafkaAuthenticationError, acl_bindings, check_access
from runtime_signals.schemas.topics import TopicNames

REPO = Path(__file__).resolve().parent.parent
KAFKA_USERS = REPO / "deploy" / "k8s" / "overlays" / "strimzi" / "kafkausers.yaml"
AGENT = "runtime-signals-agent"
PROCESSOR = "runtime-signals-processor"
ADMIN = "runtime-signals-admin"  # the plain overlay's topic-creating user
PLAN_WRITER = "runtime-signals-plan-writer"  # publishes probe plans, reads their status
MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Pki:
    ca: Path
    broker_keystore: Path  # private key + certificate, PEM (ssl.keystore.type=PEM)
    agent_certificate: Path  # CN=runtime-signals-agent, for mutual TLS
    agent_key: Path
    other_ca: Path  # a CA that signed nothing the broker uses


def _openssl(directory: Path, *args: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def make_ca(directory: Path, name: str) -> None:
    _openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def issue_leaf(directory: Path, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    _openssl(directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


def make_pki(directory: Path) -> Pki:
    """A test CA, the broker's certificate for localhost/127.0.0.1, and the agent's client
    certificate. EC keys: quick to make; OpenSSL 3 writes them as PKCS#8, which Kafka's PEM
    keystore requires."""
    if shutil.which("openssl") is None:
        raise FileNotFoundError("openssl is needed to make the test certificates (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    issue_leaf(directory, "broker", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
          "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    issue_leaf(directory, "agent", f"/CN={AGENT}", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    keystore = directory / "broker-keystore.pem"
    keystore.write_text((directory / "broker.key").read_text() + (directory / "broker.pem").read_text())
    return Pki(ca=directory / "ca.pem", broker_keystore=keystore, agent_certificate=directory / "agent.pem",
               agent_key=directory / "agent.key", other_ca=directory / "other-ca.pem")


def _broker_properties(pki: Pki) -> dict[str, str]:
    props = {
        "sasl.enabled.mechanisms": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.ssl.ssl.client.auth": "required",
        # CN=runtime-signals-agent -> User:runtime-signals-agent: the certificate gets the ACLs
        # of the SCRAM user of the same name.
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # ANONYMOUS is whoever uses the loopback PLAINTEXT and CONTROLLER listeners: the broker
        # itself (controller and inter-broker traffic) and the test's admin client.
        "super.users": "User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
    }
    for listener in ("sasl_ssl", "ssl"):
        props.update({
            f"listener.name.{listener}.ssl.keystore.type": "PEM",
            f"listener.name.{listener}.ssl.keystore.location": str(pki.broker_keystore),
            f"listener.name.{listener}.ssl.truststore.type": "PEM",
            f"listener.name.{listener}.ssl.truststore.location": str(pki.ca),
        })
    return props


@dataclass(frozen=True)
class SecureKafka:
    admin_bootstrap: str  # PLAINTEXT, super user: topic creation and ACLs only
    sasl_ssl_bootstrap: str
    mtls_bootstrap: str
    pki: Pki
    passwords: dict[str, str]
    work_dir: Path

    def config_file(self, user: str) -> Path:
        """The TOML an operator would write for this cluster (the password stays out)."""
        path = self.work_dir / f"{user}.toml"
        path.write_text(f'[kafka]\nbootstrap_servers = "{self.sasl_ssl_bootstrap}"\n'
                        f'security_protocol = "SASL_SSL"\nsasl_mechanism = "{MECHANISM}"\n'
                        f'sasl_username = "{user}"\nssl_ca_location = "{self.pki.ca}"\n')
        return path

    def client_env(self, user: str, password: str | None = None) -> dict[str, str]:
        """The environment that hands the password over, as the pod specs do."""
        return {"SIGNALS_KAFKA__SASL_PASSWORD": password if password is not None else self.passwords[user]}

    def client_config(self, user: str, password: str | None = None, **overrides: Any) -> dict[str, Any]:
        """librdkafka keys for user, through the real settings loader (file + environment)."""
        config = load_config(self.config_file(user), env=self.client_env(user, password))
        return {**config.kafka.librdkafka_config(), **overrides}


def _create_scram_users(admin: AdminClient, passwords: dict[str, str]) -> None:
    futures = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                     password.encode())
        for user, password in passwords.items()])
    for future in futures.values():
        future.result()


def _apply_acls(admin: AdminClient) -> int:
    bindings = [binding for doc in yaml.safe_load_all(KAFKA_USERS.read_text()) if doc
                for binding in acl_bindings(doc)]
    # The admin creates topics (Create on the cluster) and nothing else.
    bindings.append(AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, f"User:{ADMIN}",
                               "*", AclOperation.CREATE, AclPermissionType.ALLOW))
    for future in admin.create_acls(bindings).values():
        future.result()
    return len(bindings)


def _wait_until_credentials_work(kafka: SecureKafka, user: str, timeout_s: float = 30.0) -> None:
    # SCRAM credentials reach the broker's authenticator through the metadata log, a moment
    # after the Admin API call returns.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check_access(kafka.client_config(user), timeout_s=10)
            return
        except KafkaAuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def secure_kafka(work_dir: Path) -> Iterator[SecureKafka]:
    """A fresh broker (own state dir and free ports) for the block; stopped afterwards."""
    pki = make_pki(work_dir / "pki")
    port, controller_port = localkafka.free_port_pair()
    sasl_port, mtls_port = localkafka.free_port_pair()
    cfg = dataclasses.replace(
        localkafka.LocalKafkaConfig.from_env(state_dir=work_dir / "broker", port=port,
                                             controller_port=controller_port),
        extra_listeners={"SASL_SSL": sasl_port, "SSL": mtls_port}, extra_properties=_broker_properties(pki))
    admin_bootstrap = localkafka.up(cfg)
    try:
        admin = AdminClient({"bootstrap.servers": admin_bootstrap})
        passwords = {user: secrets.token_urlsafe(18) for user in (AGENT, PROCESSOR, ADMIN, PLAN_WRITER)}
        _create_scram_users(admin, passwords)
        assert _apply_acls(admin) > 0
        # The production names, unprefixed: the broker is this test's alone, and the ACLs
        # of kafkausers.yaml name them.
        create_topics(admin_bootstrap, TopicNames())
        kafka = SecureKafka(admin_bootstrap, f"127.0.0.1:{sasl_port}", f"127.0.0.1:{mtls_port}", pki, passwords,
                            work_dir)
        for user in passwords:
            _wait_until_credentials_work(kafka, user)
        yield kafka
    finally:
        localkafka.down(cfg)
