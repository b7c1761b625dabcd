"""FileStore's JSON text formats for the data a store keeps (no I/O).

Two formats, both JSON with ``"format"`` and ``"version"`` (:data:`FORMAT_VERSION`):

- a journal record is one line, a manifest (``"asyncflow.manifest"``) or a step checkpoint
  (``"asyncflow.step"``);
- a run file (``"asyncflow.run"``) holds everything kept for one run, indented for people::

    {
      "format": "asyncflow.run",
      "version": 1,
      "run_id": "doc-42",
      "manifest": {
        "seq": 7318894265380034560,
        "flow": "docs",
        ...
        "failed_steps": [],
        "inputs": {"path":"a.txt"}
      },
      "steps": {
        "enrich": {
          "seq": 7318894265380034561,
          "fingerprint": "...",
          "digest": "...",
          "output": {"lang":"en","words":4}
        }
      }
    }

  Outputs and inputs are the codec's JSON text, spliced in as JSON values (never re-encoded
  as strings). ``"manifest"`` is ``null`` when none is kept. ``"seq"`` (in the manifest and in
  each step) is the journal sequence number of the record the entry came from: replaying a
  journal record replaces an entry only when the record is not older (see
  :mod:`.journal`). A file without it (written before sequence numbers) reads as 0.
  ``"failed_steps"`` (in manifests, and in manifest records) was added later in version 1: a
  manifest without it reads as having none. ``"details"`` (JSON, the engine's own about the
  run) was added after it, written only when there are any: without it, none (``""``).

A record or run file of another format or version is refused with a reason, so a store can move
it aside; in a sound run file, a malformed manifest or step entry is reported on its own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from asyncflow._identity import digest
from asyncflow.stores._base import RunManifest, StepCheckpoint

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "FORMAT_VERSION",
    "BadRecord",
    "RunFile",
    "manifest_record",
    "parse_record",
    "parse_run_file",
    "parse_run_manifest",
    "record_key",
    "run_file_text",
    "step_record",
]

FORMAT_VERSION = 1
MANIFEST_FORMAT = "asyncflow.manifest"
STEP_FORMAT = "asyncflow.step"
RUN_FORMAT = "asyncflow.run"

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: A string as JSON text, as ``_encode`` writes it (json's own C function: ~0.07 us a name).
_quote = encode_basestring


def js(value: object) -> str:
    """Compact JSON text of ``value``, non-ASCII kept (a record's names: ~0.07 us, not 1.5)."""
    if type(value) is str:
        return _quote(value)
    return _encode(value)


def step_record(c: StepCheckpoint) -> str:
    # The output is codec text already: splice it in rather than parse and encode it again.
    return (
        f'{{"format":"{STEP_FORMAT}","version":{FORMAT_VERSION},"run_id":{js(c.run_id)},'
        f'"step":{js(c.step)},"fingerprint":{js(c.fingerprint)},"digest":{js(c.digest)},'
        f'"output":{c.output}}}'
    )


def manifest_record(m: RunManifest) -> str:
    return (
        f'{{"format":"{MANIFEST_FORMAT}","version":{FORMAT_VERSION},"run_id":{js(m.run_id)},'
        f'"flow":{js(m.flow)},"flow_fingerprint":{js(m.flow_fingerprint)},'
        f'"status":{js(m.status)},"created_at":{js(m.created_at)},'
        f'"updated_at":{js(m.updated_at)},"failed_steps":{_names(m.failed_steps)},'
        f'{_details(m.details, "")}"inputs":{m.inputs}}}'
    )


def _details(details: str, indent: str) -> str:
    """The ``"details"`` field and what follows it, spliced in; nothing when there are none."""
    return f'"details":{details},{indent}' if details else ""


def _names(names: tuple[str, ...]) -> str:
    return js(names) if names else "[]"


class BadRecord(ValueError):
    pass


def load_json(text: str) -> object:
    """Parse JSON text; raise :class:`BadRecord` for anything it is not (deep nesting too)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadRecord(f"not valid JSON ({exc})") from exc
    except RecursionError:
        raise BadRecord("JSON nested too deeply to read") from None


_S = r'"([^"\\\x00-\x1f]*)"'  # a JSON string with nothing escaped: its text is its value
#: The start of the records :func:`step_record` and :func:`manifest_record` write, up to the
#: output or inputs, which end the record: read without building a dict and writing the value
#: back. Anything else takes the full parse.
_STEP_HEAD = re.compile(
    rf'\{{"format":"{STEP_FORMAT}","version":{FORMAT_VERSION},"run_id":{_S},"step":{_S},'
    rf'"fingerprint":{_S},"digest":{_S},"output":'
)
_MANIFEST_HEAD = re.compile(
    rf'\{{"format":"{MANIFEST_FORMAT}","version":{FORMAT_VERSION},"run_id":{_S},"flow":{_S},'
    rf'"flow_fingerprint":{_S},"status":{_S},"created_at":{_S},"updated_at":{_S},'
    rf'"failed_steps":\[\],"inputs":'
)
_scan = json.JSONDecoder().raw_decode


def _last_value(text: str, start: int) -> str | None:
    """The JSON value at ``start`` when it is sound and the object's last: ``...<value>}``."""
    try:
        _, end = _scan(text, start)
    except (ValueError, RecursionError):
        return None
    return text[start:end] if end == len(text) - 1 and text[end] == "}" else None


def parse_record(text: str) -> RunManifest | StepCheckpoint:
    """Parse one record; raise :class:`BadRecord` saying what is wrong with it."""
    m = _STEP_HEAD.match(text)
    if m is not None and text[-1] == "}":
        run_id, step, fingerprint, output_digest = m.groups()
        # The output's own digest vouches for where it ends (far cheaper than parsing it).
        tail = text[m.end() : -1]
        try:
            intact = digest(tail) == output_digest
        except UnicodeEncodeError:
            intact = False
        output = tail if intact else _last_value(text, m.end())
        if output is not None:
            return StepCheckpoint(run_id, step, fingerprint, output_digest, output)
    m = _MANIFEST_HEAD.match(text)
    if m is not None and (inputs := _last_value(text, m.end())) is not None and inputs[0] == "{":
        run_id, flow, fingerprint, status, created, updated = m.groups()
        return RunManifest(run_id, flow, fingerprint, inputs, status, created, updated)
    raw = load_json(text)
    if not isinstance(raw, dict) or raw.get("format") not in (MANIFEST_FORMAT, STEP_FORMAT):
        raise BadRecord("not an asyncflow checkpoint (no asyncflow 'format' field)")
    if raw.get("version") != FORMAT_VERSION:
        raise BadRecord(
            f"format version {raw.get('version')!r}; this asyncflow reads version {FORMAT_VERSION}"
        )
    run_id = get_str(raw, "run_id")
    if raw["format"] == STEP_FORMAT:
        return step_from(raw, run_id, get_str(raw, "step"))
    return manifest_from(raw, run_id)


def step_from(raw: dict[str, object], run_id: str, step: str) -> StepCheckpoint:
    return StepCheckpoint(
        run_id=run_id,
        step=step,
        fingerprint=get_str(raw, "fingerprint"),
        digest=get_str(raw, "digest"),
        output=dump_value(raw["output"]) if "output" in raw else missing("output"),
    )


def manifest_from(raw: dict[str, object], run_id: str) -> RunManifest:
    inputs = raw.get("inputs")
    if not isinstance(inputs, dict):
        raise BadRecord("field 'inputs' is missing or not an object")
    return RunManifest(
        run_id=run_id,
        flow=get_str(raw, "flow"),
        flow_fingerprint=get_str(raw, "flow_fingerprint"),
        inputs=dump_value(inputs),
        status=get_str(raw, "status"),
        created_at=get_str(raw, "created_at"),
        updated_at=get_str(raw, "updated_at"),
        failed_steps=get_names(raw, "failed_steps"),
        details=dump_value(raw["details"]) if "details" in raw else "",
    )


def dump_value(value: object) -> str:
    """JSON text of a parsed value; raise :class:`BadRecord` where it cannot be written back."""
    try:
        text = js(value)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # \udcXX escapes read back as lone surrogates
                text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
        return text
    except RecursionError:
        raise BadRecord("JSON nested too deeply to read") from None
    except ValueError as exc:
        raise BadRecord(f"a value cannot be written back as JSON ({exc})") from exc


def get_str(raw: dict[str, object], key: str) -> str:
    value = raw.get(key)
    if value is None:
        missing(key)
    if not isinstance(value, str):
        raise BadRecord(f"field {key!r} is not a string")
    return value


def get_names(raw: dict[str, object], key: str) -> tuple[str, ...]:
    """A list of names; none when the field is missing (written before the field existed)."""
    value = raw.get(key, ())
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise BadRecord(f"field {key!r} is not a list of names")
    return tuple(value)


def missing(key: str) -> str:
    raise BadRecord(f"field {key!r} is missing")


def record_key(rec: RunManifest | StepCheckpoint) -> str | None:
    """What a record replaces within its run: a step's name, or ``None`` for the manifest."""
    return rec.step if isinstance(rec, StepCheckpoint) else None


@dataclass(frozen=True, slots=True)
class RunFile:
    """A parsed run file: what is sound in it, and why each unsound entry is not."""

    manifest: RunManifest | None
    steps: dict[str, StepCheckpoint]
    #: (step name, or None for the manifest; reason) for each entry left out.
    bad: list[tuple[str | None, str]]
    #: each sound entry's journal sequence number (by step name, None for the manifest).
    seqs: dict[str | None, int] = field(default_factory=dict)


def run_file_text(
    run_id: str,
    manifest: RunManifest | None,
    steps: Mapping[str, StepCheckpoint],
    seqs: Mapping[str | None, int],
) -> str:
    """The text of a run file: indented JSON, steps sorted by name, outputs spliced in.

    ``seqs`` gives each entry's journal sequence number (0 where missing).
    """
    parts = [
        f'{{\n  "format": "{RUN_FORMAT}",\n  "version": {FORMAT_VERSION},\n'
        f'  "run_id": {js(run_id)},\n'
    ]
    if manifest is None:
        parts.append('  "manifest": null,\n')
    else:
        m = manifest
        parts.append(
            f'  "manifest": {{\n    "seq": {seqs.get(None, 0)},\n    "flow": {js(m.flow)},\n'
            f'    "flow_fingerprint": {js(m.flow_fingerprint)},\n'
            f'    "status": {js(m.status)},\n    "created_at": {js(m.created_at)},\n'
            f'    "updated_at": {js(m.updated_at)},\n'
            f'    "failed_steps": {_names(m.failed_steps)},\n'
            f'    {_details(m.details, chr(10) + "    ")}"inputs": {m.inputs}\n  }},\n'
        )
    entries = [
        f'    {js(name)}: {{\n      "seq": {seqs.get(name, 0)},\n'
        f'      "fingerprint": {js(c.fingerprint)},\n'
        f'      "digest": {js(c.digest)},\n      "output": {c.output}\n    }}'
        for name, c in sorted(steps.items())
    ]
    parts.append(
        '  "steps": {\n' + ",\n".join(entries) + "\n  }\n}\n" if entries else '  "steps": {}\n}\n'
    )
    return "".join(parts)


def parse_run_file(text: str, run_id: str) -> RunFile:
    """Parse a run file of ``run_id``; unsound entries are listed in ``bad``, not raised.

    Raises:
        BadRecord: the file as a whole cannot be used (not JSON, another format, version or run).
    """
    raw = run_file_object(text, run_id)
    raw_steps = raw["steps"]
    bad: list[tuple[str | None, str]] = []
    manifest: RunManifest | None = None
    seqs: dict[str | None, int] = {}
    raw_manifest = raw.get("manifest")
    if isinstance(raw_manifest, dict):
        try:
            manifest = manifest_from(raw_manifest, run_id)
            seqs[None] = get_seq(raw_manifest)
        except BadRecord as exc:
            bad.append((None, f"manifest: {exc}"))
    elif raw_manifest is not None:
        bad.append((None, "manifest: not an object"))
    steps: dict[str, StepCheckpoint] = {}
    for name, entry in raw_steps.items():
        if not isinstance(entry, dict):
            bad.append((name, f"step {name!r}: not an object"))
            continue
        try:
            steps[name] = step_from(entry, run_id, name)
            seqs[name] = get_seq(entry)
        except BadRecord as exc:
            bad.append((name, f"step {name!r}: {exc}"))
    return RunFile(manifest, steps, bad, seqs)


def run_file_object(text: str, run_id: str) -> dict[str, Any]:
    """Parse a run file of ``run_id`` as JSON and check what makes it usable as a whole.

    Raises:
        BadRecord: not JSON, another format, version or run, or no ``"steps"`` object.
    """
    raw = load_json(text)
    if not isinstance(raw, dict) or raw.get("format") != RUN_FORMAT:
        raise BadRecord("not an asyncflow run file (no 'format': 'asyncflow.run')")
    if raw.get("version") != FORMAT_VERSION:
        raise BadRecord(
            f"format version {raw.get('version')!r}; this asyncflow reads version {FORMAT_VERSION}"
        )
    if raw.get("run_id") != run_id:
        raise BadRecord(f"belongs to run {raw.get('run_id')!r}, not {run_id!r}")
    if not isinstance(raw.get("steps"), dict):
        raise BadRecord("field 'steps' is missing or not an object")
    return raw


def parse_run_manifest(text: str, run_id: str) -> tuple[RunManifest | None, int]:
    """Parse just the manifest of a run file of ``run_id``, and its sequence number (0: none).

    For listings: the steps are not parsed, so a bad step entry does not matter here.

    Raises:
        BadRecord: the file as a whole, or its manifest, cannot be used.
    """
    raw_manifest = run_file_object(text, run_id).get("manifest")
    if raw_manifest is None:
        return None, 0
    if not isinstance(raw_manifest, dict):
        raise BadRecord("manifest: not an object")
    try:
        return manifest_from(raw_manifest, run_id), get_seq(raw_manifest)
    except BadRecord as exc:
        raise BadRecord(f"manifest: {exc}") from None


def get_seq(raw: dict[str, object]) -> int:
    """An entry's journal sequence number; 0 in files written before there were any."""
    value = raw.get("seq", 0)
    if type(value) is not int or value < 0:
        raise BadRecord("field 'seq' is not a whole number")
    return value
