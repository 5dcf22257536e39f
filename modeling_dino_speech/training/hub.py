"""Push an exported model folder to the Hugging Face Hub without ever risking the local copy.

The end of a training run calls this with ``<output_dir>/final``. A push is a convenience, the local export
is the result: so a failed push (offline, no or wrong token, server error, timeout) never raises and never
touches the folder; it returns ``PushResult(ok=False, ...)`` with a one-line reason saying what failed and
what to do, and logs that line. The token is never printed or logged: every message that leaves this module
has it scrubbed, whatever the underlying library put in its error text.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token

logger = logging.getLogger(__name__)

MODEL_CARD = "README.md"
DEFAULT_COMMIT_MESSAGE = "Upload dino-speech model"
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class PushResult:
    """Outcome of :func:`push_folder_to_hub`.

    Attributes:
        ok: True when the whole folder was committed to the repository.
        url: the repository URL when ``ok`` (None otherwise).
        message: one line for humans: what was pushed where, or what failed and what to do about it.
    """

    ok: bool
    url: str | None
    message: str


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    endpoint: str | None = None,
    timeout: float | None = 1800.0,
) -> PushResult:
    """Create ``repo_id`` if needed and upload every file of ``folder`` to it in one go.

    Args:
        folder: an exported model folder (``config.json``, ``model.safetensors``, feature extractor config,
            ``README.md`` model card). A missing model card is reported in the message but does not stop the push.
        repo_id: ``"namespace/name"`` on the Hub.
        token: a write token; None falls back to ``HF_TOKEN`` or the token saved by ``hf auth login``.
        private: create the repository as private (ignored when it already exists).
        commit_message: the commit's title.
        endpoint: the Hub URL; None means ``HF_ENDPOINT`` as set now, else huggingface_hub's default.
        timeout: seconds to wait for the whole push before giving up (None waits forever). The client has no
            network timeout of its own, so without this a stalled connection would hang the end of training.

    Returns:
        A :class:`PushResult`; never raises for network, auth, server or offline failures.
    """
    folder = Path(folder)
    effective_token = token or _saved_token()
    secrets = [s for s in (token, effective_token) if s]
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")

    card_note = ""
    if folder.is_dir() and not (folder / MODEL_CARD).is_file():
        card_note = f" Warning: {folder} has no {MODEL_CARD} model card, so the repository gets none; add one."

    def fail(reason: str) -> PushResult:
        message = _redact(
            f"push of {folder} to {repo_id} failed: {reason}. Nothing local was changed.{card_note}", secrets
        )
        logger.warning(message)
        return PushResult(ok=False, url=None, message=message)

    if not folder.is_dir():
        return fail(f"{folder} is not a folder")
    if not any(p.is_file() for p in folder.rglob("*")):
        return fail(f"{folder} holds no files")
    if _offline():
        return fail(
            "HF_HUB_OFFLINE=1 is set (huggingface_hub refuses all network calls); unset it or set "
            "HF_HUB_OFFLINE=0, then push again"
        )

    api = HfApi(endpoint=endpoint, token=token)
    outcome: dict[str, object] = {}

    def push() -> None:
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(
                folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message
            )
            outcome["url"] = str(repo_url)
            outcome["commit"] = getattr(commit, "oid", None)
        except BaseException as error:
            outcome["error"] = error

    # A worker thread is how the push gets a deadline: the client sets no network timeout itself.
    worker = threading.Thread(target=push, name=f"push-to-hub:{repo_id}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return fail(
            f"no answer from {endpoint} within {timeout:g} s (timed out; the abandoned upload thread may still "
            "finish); check the network and push again"
        )
    if "error" in outcome:
        return fail(_describe(outcome["error"], endpoint, repo_id, has_token=bool(effective_token)))

    url = str(outcome["url"])
    message = _redact(f"pushed {folder} to {url} (commit {outcome.get('commit')}).{card_note}", secrets)
    logger.info(message)
    return PushResult(ok=True, url=url, message=message)


def _saved_token() -> str | None:
    try:
        return get_token()
    except Exception:
        return None


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: honour both that snapshot and the variable as it is now.
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _describe(error: BaseException, endpoint: str, repo_id: str, has_token: bool) -> str:
    """One line saying what failed and what to do, from whatever the client raised."""
    kinds = {cls.__name__ for cls in type(error).__mro__}  # names, not classes: the HTTP stack varies by version
    detail = (getattr(error, "server_message", None) or _first_line(error)).strip().splitlines()[0]
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if "OfflineModeIsEnabled" in kinds:
        return "huggingface_hub is in offline mode (HF_HUB_OFFLINE was set when it was imported); run without it"
    if status in (401, 403):
        if not has_token:
            return f"the Hub refused the request (HTTP {status}) and no token was found; set HF_TOKEN or pass token="
        return (
            f"the Hub refused the token (HTTP {status}); check that HF_TOKEN is valid and may write to "
            f"{repo_id.split('/')[0]!r}"
        )
    if status == 404:
        return f"the Hub answered HTTP 404 ({detail}); check repo_id {repo_id!r} and that the token may write to it"
    if status is not None and (status >= 500 or status == 429):
        return f"the Hub answered HTTP {status} ({detail}); try again later"
    if status is not None:
        return f"the Hub rejected the request with HTTP {status} ({detail}); check repo_id {repo_id!r}"
    if kinds & {"TimeoutException", "Timeout", "TimeoutError", "ReadTimeout", "ConnectTimeout"}:
        return f"timed out talking to {endpoint} ({detail}); check the network and push again"
    if kinds & {"ConnectError", "NetworkError", "ConnectionError", "TransportError", "RequestError"}:
        return f"cannot reach {endpoint} ({detail}); check the network or HF_ENDPOINT and push again"
    if isinstance(error, ValueError):
        return f"the request was rejected before upload ({detail}); fix it and push again"
    return f"{type(error).__name__}: {detail}"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
