"""Errors as TF Serving reports them: a canonical status code name and a message."""

# Canonical codes in number order (TensorFlow's error_code and gRPC's status share them).
CODE_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")

# TF Serving's mapping (model_servers/http_server.cc ToHTTPStatusCode).
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request or a load failed; `code` is a name from CODE_NAMES."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


def code_of(error: BaseException) -> str:
    """The canonical code of a ServingError or a TensorFlow OpError; UNKNOWN otherwise."""
    if isinstance(error, ServingError):
        return error.code
    number = getattr(error, "error_code", None)
    if isinstance(number, int) and 0 <= number < len(CODE_NAMES):
        return CODE_NAMES[number]
    return "UNKNOWN"


def code_for_http_status(status: int) -> str:
    """Best guess of the code behind a REST error (several codes share 400 and 500)."""
    for code, http_status in HTTP_STATUS.items():
        if http_status == status:
            return code
    return "UNKNOWN"
