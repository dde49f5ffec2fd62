"""One tree of errors, each with the HTTP status a request that caused it should get.

Every error class of soundarc is here. The service answers any `SoundarcError` with its
`status_code`, its `headers` and the JSON body `to_dict()` = {"error": kind, "message": ...}
(service.http.error_response); nothing a client sends may surface as anything else.
"""


class SoundarcError(Exception):
    """Base of every error soundarc raises on purpose."""

    status_code = 500

    @property
    def kind(self) -> str:
        return type(self).__name__

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers of this error's response."""
        return {}

    def to_dict(self) -> dict:
        return {"error": self.kind, "message": str(self)}


class BadRequest(SoundarcError):
    """400: a request we cannot parse (malformed multipart body)."""

    status_code = 400


class BadAudio(SoundarcError):
    """400: the bytes are not audio we can use."""

    status_code = 400


class EmptyAudio(BadAudio):
    """400: zero bytes, or a valid file with no samples."""


class UndecodableAudio(BadAudio):
    """400: not a recognised audio format, truncated, or corrupt."""


class SilentAudio(BadAudio):
    """400: an example clip that must hold sound (enrolment) holds none."""


class InvalidSamples(BadAudio):
    """400: decoded samples contain NaN or infinity."""


class BadAudioFormat(BadAudio):
    """400: a header with an absurd channel count or sample rate."""


class TooLarge(SoundarcError):
    """413: the upload or the audio is larger than the configured limit."""

    status_code = 413


class UploadTooLarge(TooLarge):
    """413: more bytes than the upload limit."""


class AudioTooLong(TooLarge):
    """413: longer than the duration limit."""


class RequestTimeout(SoundarcError):
    """408: the request's body stopped arriving (no bytes for a while): its slot is given back, and the
    connection closed (the rest of its body will not be read)."""

    status_code = 408

    @property
    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class ProcessingTimeout(SoundarcError):
    """504: the answer took longer than the request timeout (SOUNDARC_REQUEST_TIMEOUT_S)."""

    status_code = 504


class UnsupportedMediaType(SoundarcError):
    """415: a content type we do not decode."""

    status_code = 415


class InvalidParameter(SoundarcError):
    """422: a request parameter out of range or of the wrong type."""

    status_code = 422


class NotFound(SoundarcError):
    """404: the named thing (index, class) does not exist."""

    status_code = 404


class MethodNotAllowed(SoundarcError):
    """405: the route exists, not with this method; `allow` lists the methods it takes."""

    status_code = 405

    def __init__(self, message: str, allow: str):
        super().__init__(message)
        self.allow = allow

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class UpgradeRequired(SoundarcError):
    """426: a plain HTTP request to a WebSocket route (/stream)."""

    status_code = 426

    @property
    def headers(self) -> dict[str, str]:
        return {"Upgrade": "websocket", "Connection": "Upgrade"}


class Forbidden(SoundarcError):
    """403: a change asked for by a page of another site (as a browser says in Sec-Fetch-Site or Origin)."""

    status_code = 403


class Conflict(SoundarcError):
    """409: the request clashes with what exists (a duplicate class name, a built-in class)."""

    status_code = 409


class StorageError(SoundarcError):
    """507 Insufficient Storage: a file the service keeps (the enrolled classes) cannot be written (a read-only
    or full disk, a path that is not a folder); nothing was changed. Not 503: retrying does not help."""

    status_code = 507


class Overloaded(SoundarcError):
    """503: too many requests in flight; retry after `retry_after_s`."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class FrameworkError(SoundarcError):
    """An error answer of the frameworks under the service (BentoML, Starlette) with no class of
    its own here: its status is kept, its text becomes the message."""

    status_code = 500

    def __init__(self, message: str, status_code: int = 500, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status_code, self.framework_headers = status_code, headers or {}

    @property
    def headers(self) -> dict[str, str]:
        return self.framework_headers


class GPUUnavailable(SoundarcError):
    """503: a GPU was required (SOUNDARC_REQUIRE_GPU) but ONNX Runtime could not use one."""

    status_code = 503


class ArtifactError(SoundarcError):
    """A model artifact is missing, altered, or of an unknown version (a deployment error)."""


class ModelFailure(SoundarcError):
    """500: the model answered NaN or infinity for a clip's windows (a damaged model, or an fp16 variant that
    overflows): no answer, rather than the first class or an angle that never says "unknown"."""


class ExportValidationError(SoundarcError):
    """The exported model does not match PyTorch within the stated tolerances (no manifest written)."""


class ConfigError(SoundarcError, ValueError):
    """A configuration key or value is invalid (raised at start-up, never per request)."""

    status_code = 422


def name_the_file(e: BaseException, path) -> None:
    """A system error without a file name (a write's ENOSPC: the data went to an open file) given `path`'s."""
    if isinstance(e, OSError) and e.errno is not None and e.filename is None:
        e.filename = str(path)
