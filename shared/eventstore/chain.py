"""The hash chain that makes the log tamper-evident.

Each event row carries ``chain_hash`` = SHA-256 over a canonical encoding of (previous hash of the
same job, job id, version, topic, the stored state bytes). The first event of a job chains to 32
zero bytes. Editing, deleting, inserting or reordering a job's rows breaks the chain from that
point on, unless the tamperer also recomputes every later hash of the job; the checkpoints below
catch that too.

A checkpoint holds the running *log head*: a hash over every event's ``chain_hash`` in
notification (commit) order. Stored in PostgreSQL and, for independence, appended to a file the
operator keeps elsewhere; optionally HMAC-signed with a key the database never sees. Checkpoints
chain too: each names its number (``seq``) and the digest of its predecessor, and its signature
covers both, so a checkpoint deleted or replaced among the others breaks the chain of the rest.
"""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

GENESIS = bytes(32)
_EVENT = b"jobtrail.event.v1\x00"
_HEAD = b"jobtrail.head.v1\x00"
_CHECKPOINT = b"jobtrail.checkpoint.v1\x00"


def event_hash(previous: bytes, job_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    """The chain hash of one event row, given the hash of the job's previous event."""
    topic_bytes = topic.encode()
    digest = hashlib.sha256(_EVENT)
    digest.update(previous)
    digest.update(job_id.bytes)
    digest.update(version.to_bytes(8, "big", signed=True))
    digest.update(len(topic_bytes).to_bytes(4, "big"))
    digest.update(topic_bytes)
    digest.update(len(state).to_bytes(8, "big"))
    digest.update(state)
    return digest.digest()


def head_hash(previous: bytes, notification_id: int, chain_hash: bytes) -> bytes:
    """The log head after one more event in notification order."""
    return hashlib.sha256(
        _HEAD + previous + notification_id.to_bytes(8, "big", signed=True) + chain_hash
    ).digest()


def sign(key: bytes, notification_id: int, head: bytes) -> bytes:
    """HMAC-SHA256 of a checkpoint, so a database writer cannot forge one without the key."""
    message = notification_id.to_bytes(8, "big", signed=True) + head
    return hmac.new(key, message, hashlib.sha256).digest()


def checkpoint_digest(
    seq: int, notification_id: int, head: bytes, events: int, previous: bytes
) -> bytes:
    """The digest of a chained checkpoint: its number, what it covers, and its predecessor's
    digest (GENESIS for the first)."""
    return hashlib.sha256(
        _CHECKPOINT
        + seq.to_bytes(8, "big", signed=True)
        + notification_id.to_bytes(8, "big", signed=True)
        + head
        + events.to_bytes(8, "big", signed=True)
        + previous
    ).digest()


def sign_digest(key: bytes, digest: bytes) -> bytes:
    """HMAC-SHA256 of a chained checkpoint's digest."""
    return hmac.new(key, _CHECKPOINT + digest, hashlib.sha256).digest()
