"""Service errors of the Azure Files emulator: status, error code and message as the service sends.

Every failure the emulator reports is a `StorageError`; the HTTP adapter turns it into the
service's XML body (`<Error><Code/><Message/></Error>`) plus the `x-ms-error-code` header.
Codes and messages follow the Azure Storage / Azure Files error-code tables so that the SDK maps
them to the same exception types (`ResourceNotFoundError`, `ResourceExistsError`,
`ClientAuthenticationError`, ...) as it does against the real service.
"""

from __future__ import annotations

from collections.abc import Iterable

# The service's wording for each code we emit (from the Azure Storage error-code tables).
MESSAGES: dict[str, str] = {
    "AuthenticationFailed": (
        "Server failed to authenticate the request. Make sure the value of Authorization header "
        "is formed correctly including the signature."
    ),
    "AuthorizationFailure": "This request is not authorized to perform this operation.",
    "AuthorizationPermissionMismatch": (
        "This request is not authorized to perform this operation using this permission."
    ),
    "AuthorizationProtocolMismatch": (
        "This request is not authorized to perform this operation using this protocol."
    ),
    "AuthorizationResourceTypeMismatch": (
        "This request is not authorized to perform this operation using this resource type."
    ),
    "AuthorizationServiceMismatch": (
        "This request is not authorized to perform this operation using this service."
    ),
    "AuthorizationSourceIPMismatch": (
        "This request is not authorized to perform this operation using this source IP."
    ),
    "ConditionNotMet": "The condition specified using HTTP conditional header(s) is not met.",
    "DirectoryNotEmpty": "The specified directory is not empty.",
    "InternalError": "The server encountered an internal error. Please retry the request.",
    "InvalidAuthenticationInfo": (
        "Server failed to authenticate the request. Please refer to the information in the "
        "www-authenticate header."
    ),
    "InvalidHeaderValue": ("The value for one of the HTTP headers is not in the correct format."),
    "InvalidQueryParameterValue": (
        "Value for one of the query parameters specified in the request URI is invalid."
    ),
    "InvalidRange": "The range specified is invalid for the current size of the resource.",
    "InvalidResourceName": "The specified resource name contains invalid characters.",
    "InvalidUri": "The requested URI does not represent any resource on the server.",
    "LeaseNotPresentWithFileOperation": "There is currently no lease on the file.",
    "Md5Mismatch": "The MD5 value specified in the request did not match with the MD5 value "
    "calculated by the server.",
    "MissingRequiredHeader": "An HTTP header that's mandatory for this request is not specified.",
    "NoAuthenticationInformation": (
        "Server failed to authenticate the request. Please refer to the information in the "
        "www-authenticate header."
    ),
    "OperationTimedOut": "The operation could not be completed within the permitted time.",
    "OutOfRangeInput": "One of the request inputs is out of range.",
    "OutOfRangeQueryParameterValue": (
        "One of the query parameters specified in the request URI is outside the permissible range."
    ),
    "ParentNotFound": "The specified parent path does not exist.",
    "RequestBodyTooLarge": "The request body is too large and exceeds the maximum permissible "
    "limit.",
    "ResourceAlreadyExists": "The specified resource already exists.",
    "ResourceNotFound": "The specified resource does not exist.",
    "ResourceTypeMismatch": (
        "The specified resource type does not match the type of the resource."
    ),
    "ServerBusy": "The server is currently unable to receive requests. Please retry your request.",
    "ShareAlreadyExists": "The specified share already exists.",
    "ShareNotFound": "The specified share does not exist.",
    "UnsupportedHttpVerb": "The resource doesn't support the specified HTTP verb.",
}

# Default code for an injected failure of a given status (see faults.py).
CODE_FOR_STATUS: dict[int, str] = {
    500: "InternalError",
    503: "ServerBusy",
}


class StorageError(Exception):
    """A failure answered the way the service answers it (status + error code + message)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        details: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, code)
        # Extra response headers (e.g. WWW-Authenticate) and extra XML elements after
        # <Message> (e.g. AuthenticationErrorDetail, HeaderName) as the service adds them.
        self.headers = list(headers)
        self.details = list(details)
        super().__init__(f"{status} {code}: {self.message}")


def auth_failed(detail: str) -> StorageError:
    """403 AuthenticationFailed with the service's AuthenticationErrorDetail element."""
    return StorageError(
        403, "AuthenticationFailed", details=[("AuthenticationErrorDetail", detail)]
    )


def missing_header(name: str) -> StorageError:
    """400 MissingRequiredHeader naming the header, as the service does."""
    return StorageError(400, "MissingRequiredHeader", details=[("HeaderName", name)])


def bad_header(name: str, value: str) -> StorageError:
    """400 InvalidHeaderValue naming the header and the rejected value."""
    return StorageError(
        400, "InvalidHeaderValue", details=[("HeaderName", name), ("HeaderValue", value)]
    )


def bad_query(name: str, value: str, code: str = "InvalidQueryParameterValue") -> StorageError:
    """400 for a query parameter the service would reject."""
    return StorageError(
        400, code, details=[("QueryParameterName", name), ("QueryParameterValue", value)]
    )
