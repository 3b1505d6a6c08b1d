"""Why an envelope was refused; every refusal is an ``EMCLFailure`` carrying one reason.

Messages are fixed texts written here: they never include payloads, keys or field values.
"""

from __future__ import annotations

from enum import StrEnum

from ..protocol.errors import EMCLFailure


class Reason(StrEnum):
    #: Not a well-formed EMCL v1 envelope (missing field, bad encoding, wrong sizes).
    MALFORMED = "malformed"
    #: The key id is unknown, retired or expired.
    UNKNOWN_KEY = "unknown_key"
    #: The MAC or the AEAD tag does not verify: some byte was changed.
    TAMPERED = "tampered"
    #: The timestamp is outside the acceptance window.
    STALE = "stale"
    #: This sender's nonce was already accepted.
    REPLAYED = "replayed"
    #: A request presented as a reply or the reverse, or our own message sent back to us.
    REFLECTED = "reflected"
    #: Addressed to another agent.
    MISDIRECTED = "misdirected"
    #: The sender is not the agent this key or this channel belongs to.
    UNEXPECTED_SENDER = "unexpected_sender"
    #: A response that does not answer a request this endpoint is waiting for.
    UNMATCHED_REPLY = "unmatched_reply"
    #: The identity chain is broken, does not end at the sender, or fails the trust policy.
    UNTRUSTED_CHAIN = "untrusted_chain"
    #: No key to seal with (local configuration).
    NO_KEY = "no_key"


_MESSAGES = {
    Reason.MALFORMED: "EMCL envelope is malformed",
    Reason.UNKNOWN_KEY: "EMCL envelope uses an unknown key",
    Reason.TAMPERED: "EMCL envelope failed authentication",
    Reason.STALE: "EMCL envelope timestamp is outside the acceptance window",
    Reason.REPLAYED: "EMCL envelope was already received",
    Reason.REFLECTED: "EMCL envelope was reflected",
    Reason.MISDIRECTED: "EMCL envelope is addressed to another agent",
    Reason.UNEXPECTED_SENDER: "EMCL envelope comes from an unexpected sender",
    Reason.UNMATCHED_REPLY: "EMCL response does not answer a pending request",
    Reason.UNTRUSTED_CHAIN: "EMCL identity chain is not trusted",
    Reason.NO_KEY: "no EMCL key to seal with",
}


def failure(reason: Reason) -> EMCLFailure:
    """The exception for ``reason`` (not retryable: resending the same bytes cannot help)."""
    return EMCLFailure(_MESSAGES[reason], details={"reason": reason.value})


def reason_of(exc: EMCLFailure) -> str | None:
    value = exc.details.get("reason")
    return value if isinstance(value, str) else None
