"""Kafka security at start-up: check that a client's settings are accepted, and say why not.

The settings themselves are runtime_signals.config's (kafka.security_protocol, kafka.sasl_*,
kafka.ssl_*), handed to every client as librdkafka keys (security.protocol, sasl.*, ssl.*).
This module adds what librdkafka does not do:

* check_access(): connect once and fail fast. librdkafka treats a refused password, an
  untrusted certificate or a missing client certificate like a broker that is down: it logs
  and retries forever, so an agent or worker started with a wrong password waits out every
  timeout and delivers nothing. check_access() turns the first such error into an exception
  that names the setting to fix, within its timeout.
* acl_bindings(): the ACLs of a Strimzi KafkaUser resource (deploy/k8s/overlays/strimzi/
  kafkausers.yaml) as AdminClient bindings, so a cluster without Strimzi gets exactly the
  ACLs the manifests declare, and the tests prove those very ACLs against a real broker.
* redacted(): a librdkafka config safe to log.

Exceptions:
    KafkaSecurityError               root of everything raised here
     ├── KafkaAccessError            the broker refused this client; fix the settings (`.code`)
     │    ├── KafkaAuthenticationError   SASL credentials or mechanism refused
     │    ├── KafkaTlsError              TLS handshake failed (CA, host name, client certificate)
     │    └── KafkaAuthorizationError    an ACL refuses a topic (`.topic`), or it does not exist
     ├── KafkaUnreachableError       no broker answered in time; may be transient (`.last_error`)
     └── AclSpecError                a KafkaUser resource this module cannot translate
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

# librdkafka keys whose values are secrets: never logged, printed as ***.
SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password", "ssl.keystore.password",
                         "sasl.oauthbearer.client.secret", "ssl.key.pem"})
_DEFAULT_TIMEOUT_S = 30.0


class KafkaSecurityError(Exception):
    """Root of the errors raised by runtime_signals.kafka.security."""


class KafkaAccessError(KafkaSecurityError):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class KafkaAuthenticationError(KafkaAccessError):
    pass


class KafkaTlsError(KafkaAccessError):
    pass


class KafkaAuthorizationError(KafkaAccessError):
    def __init__(self, message: str, topic: str, code: int | None = None) -> None:
        super().__init__(message, code)
        self.topic = topic


class KafkaUnreachableError(KafkaSecurityError):
    def __init__(self, message: str, last_error: str | None) -> None:
        super().__init__(message)
        self.last_error = last_error


class AclSpecError(KafkaSecurityError):
    pass


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """config with every secret value replaced by ***, for logs and `config check`."""
    return {key: "***" if key in SECRET_KEYS and value else value for key, value in config.items()}


def setting_name(key: str) -> str:
    """The documented setting behind a librdkafka key: sasl.password -> kafka.sasl_password."""
    return "kafka." + key.replace(".", "_")


def check_access(config: Mapping[str, Any], topics: Sequence[str] = (),
                 timeout_s: float = _DEFAULT_TIMEOUT_S) -> None:
    """Connect with config (librdkafka keys: bootstrap.servers, security.protocol, sasl.*,
    ssl.*) and look up topics; return when the cluster accepts this client and shows it
    every topic, raise otherwise.

    Raises KafkaAuthenticationError / KafkaTlsError as soon as librdkafka reports one (not at
    the timeout), KafkaAuthorizationError for a topic the principal may not describe or that
    does not exist, and KafkaUnreachableError when no broker answered within timeout_s.
    """
    errors: list[KafkaError] = []
    client = Producer({
        **{key: value for key, value in config.items() if not callable(value)},
        "error_cb": errors.append,
        # Our exception reports the failure; librdkafka's own log lines would repeat it
        # every reconnect backoff.
        "log_level": 0,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    })
    deadline = time.monotonic() + timeout_s
    try:
        _wait_for_metadata(client, config, errors, deadline, timeout_s)
        for topic in topics:
            _check_topic(client, config, topic, max(0.5, deadline - time.monotonic()))
    finally:
        # Nothing was produced: no flush needed. Polling serves queued callbacks so the
        # client can be destroyed without warnings.
        client.poll(0)


def _wait_for_metadata(client: Producer, config: Mapping[str, Any], errors: list[KafkaError],
                       deadline: float, timeout_s: float) -> None:
    while True:
        remaining = deadline - time.monotonic()
        answered = False
        try:
            answered = bool(client.list_topics(timeout=max(0.1, min(1.0, remaining))).brokers)
        except KafkaException as exc:
            errors.append(exc.args[0])
        client.poll(0)  # serves error_cb
        for error in errors:
            refusal = _refusal(error, config)
            if refusal is not None:
                raise refusal
        if answered:
            return
        if remaining <= 0:
            # error_cb's reports say more ("might be caused by incorrect security.protocol")
            # than list_topics' own "Broker transport failure".
            reported = [e for e in errors if e.code() != KafkaError._TRANSPORT or "Failed to get metadata" not in e.str()]
            last = (reported or errors)[-1].str() if errors else None
            raise KafkaUnreachableError(
                f"no Kafka broker at {config.get('bootstrap.servers')} answered within {timeout_s:g}s "
                f"(security.protocol={config.get('security.protocol', 'PLAINTEXT')})"
                + (f"; last error: {last}" if last else "")
                + ". Check kafka.bootstrap_servers and that kafka.security_protocol matches the "
                "broker's listener", last)


def _refusal(error: KafkaError, config: Mapping[str, Any]) -> KafkaAccessError | None:
    """The exception for an error that retrying cannot fix, else None."""
    bootstrap = config.get("bootstrap.servers")
    text = error.str()
    if error.code() == KafkaError._AUTHENTICATION:
        user = config.get("sasl.username")
        if user is None and "SSL" in str(config.get("security.protocol", "")).upper():
            return KafkaTlsError(
                f"Kafka at {bootstrap} refused the TLS connection: {text}. Check "
                f"{setting_name('ssl.ca.location')} (the CA that signed the brokers' certificates), "
                f"and for mutual TLS {setting_name('ssl.certificate.location')} and "
                f"{setting_name('ssl.key.location')}", error.code())
        return KafkaAuthenticationError(
            f"Kafka at {bootstrap} refused SASL user {user!r} ({config.get('sasl.mechanism')}): {text}. "
            f"Check {setting_name('sasl.username')} and {setting_name('sasl.password')} "
            "(SIGNALS_KAFKA__SASL_PASSWORD), and that the broker enables this mechanism", error.code())
    # A TLS alert from the broker (no or untrusted client certificate) arrives as a transport
    # error; it recurs on every reconnect, so it is as final as a handshake failure.
    if error.code() == KafkaError._SSL or "ssl/tls alert" in text.lower():
        return KafkaTlsError(
            f"TLS handshake with Kafka at {bootstrap} failed: {text}. Check "
            f"{setting_name('ssl.ca.location')} (the CA that signed the brokers' certificates), that "
            f"the certificate names the host in kafka.bootstrap_servers "
            f"({setting_name('ssl.endpoint.identification.algorithm')}), and for mutual TLS "
            f"{setting_name('ssl.certificate.location')} / {setting_name('ssl.key.location')}",
            error.code())
    return None


def _check_topic(client: Producer, config: Mapping[str, Any], topic: str, timeout_s: float) -> None:
    metadata = client.list_topics(topic, timeout=timeout_s)
    described = metadata.topics.get(topic)
    error = described.error if described is not None else None
    if error is None:
        return
    principal = config.get("sasl.username") or "this client's certificate"
    if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        raise KafkaAuthorizationError(
            f"Kafka at {config.get('bootstrap.servers')} does not let {principal!r} use topic {topic!r} "
            f"({error.name()}): grant its ACLs (deploy/k8s/overlays/strimzi/kafkausers.yaml lists them)",
            topic, error.code())
    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise KafkaAuthorizationError(
            f"topic {topic!r} does not exist on {config.get('bootstrap.servers')}: create the topics "
            "(`signals kafka topics`, or the KafkaTopic resources)", topic, error.code())
    raise KafkaAccessError(f"looking up topic {topic!r} on {config.get('bootstrap.servers')}: {error}",
                           error.code())


# Strimzi's names (KafkaUser spec.authorization.acls) to the AdminClient's.
_RESOURCE_TYPES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
                   "cluster": ResourceType.BROKER, "transactionalId": ResourceType.TRANSACTIONAL_ID}
_PATTERN_TYPES = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}


def acl_bindings(kafka_user: Mapping[str, Any]) -> list[AclBinding]:
    """The ALLOW bindings a Strimzi KafkaUser (kafka.strimzi.io/v1beta2, authorization type
    simple) declares, for the principal User:<metadata.name>."""
    if kafka_user.get("kind") != "KafkaUser":
        raise AclSpecError(f"expected a KafkaUser resource, got kind {kafka_user.get('kind')!r}")
    name = kafka_user["metadata"]["name"]
    authorization = kafka_user.get("spec", {}).get("authorization") or {}
    if authorization.get("type") != "simple":
        raise AclSpecError(f"KafkaUser {name}: spec.authorization.type must be 'simple' "
                           f"(got {authorization.get('type')!r})")
    bindings = []
    for index, rule in enumerate(authorization.get("acls") or []):
        where = f"KafkaUser {name}: spec.authorization.acls[{index}]"
        resource = rule.get("resource") or {}
        kind = _RESOURCE_TYPES.get(str(resource.get("type")))
        if kind is None:
            raise AclSpecError(f"{where}.resource.type {resource.get('type')!r} is not one of "
                               f"{', '.join(_RESOURCE_TYPES)}")
        pattern = _PATTERN_TYPES.get(resource.get("patternType", "literal"))
        if pattern is None:
            raise AclSpecError(f"{where}.resource.patternType must be literal or prefix")
        resource_name = "kafka-cluster" if kind == ResourceType.BROKER else resource.get("name")
        if not resource_name:
            raise AclSpecError(f"{where}.resource.name is missing")
        operations = rule.get("operations") or ([rule["operation"]] if "operation" in rule else [])
        if not operations:
            raise AclSpecError(f"{where}: no operations")
        if rule.get("type", "allow") != "allow":
            raise AclSpecError(f"{where}.type: only allow rules are used here")
        for operation in operations:
            try:
                acl_operation = AclOperation[_snake_upper(operation)]
            except KeyError as exc:
                raise AclSpecError(f"{where}: unknown operation {operation!r}") from exc
            bindings.append(AclBinding(kind, resource_name, pattern, f"User:{name}", rule.get("host", "*"),
                                       acl_operation, AclPermissionType.ALLOW))
    return bindings


def _snake_upper(operation: str) -> str:
    # Strimzi writes IdempotentWrite / DescribeConfigs; AclOperation has IDEMPOTENT_WRITE.
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(operation)).upper()
