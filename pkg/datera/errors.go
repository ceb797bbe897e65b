package datera

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error classes, for errors.Is. An *APIError matches the class of its HTTP status and Datera
// error name; client-side checks produce a *ValidationError, which matches ErrValidation.
var (
	// ErrNotFound: 404 NotFoundError.
	ErrNotFound = errors.New("datera: not found")
	// ErrConflict: 409 ConflictError, or an existing resource that differs from the request.
	ErrConflict = errors.New("datera: conflict")
	// ErrAuth: 401 AuthFailedError / PermissionDeniedError, or 403; also a login that returned no key.
	ErrAuth = errors.New("datera: authentication failed")
	// ErrValidation: 400 InvalidRequestError, 422 ValidationFailedError, or input the client
	// refused before sending.
	ErrValidation = errors.New("datera: invalid request")
	// ErrUnavailable: 503, or a 500 "REST server is still initializing", that outlived the retries.
	ErrUnavailable = errors.New("datera: service unavailable")
	// ErrBadResponse: a response the client cannot understand (malformed, oversized, no envelope).
	ErrBadResponse = errors.New("datera: bad response")
	// ErrNotReady: the volume is not (yet) usable for the requested operation, e.g. it is offline
	// or has no access information.
	ErrNotReady = errors.New("datera: not ready")
)

// Datera error names: the "name" field of an error body.
const (
	NameNotFound         = "NotFoundError"
	NameConflict         = "ConflictError"
	NameInvalidRequest   = "InvalidRequestError"
	NameValidationFailed = "ValidationFailedError"
	NameAuthFailed       = "AuthFailedError"
	NamePermissionDenied = "PermissionDeniedError"
)

// initializingMessage marks a 500 that is retryable (PYSDK).
const initializingMessage = "REST server is still initializing"

// APIError is an error answered by the Datera API.
type APIError struct {
	// Method and Path of the request (path relative to the version prefix).
	Method string
	Path   string
	// Status is the HTTP status code.
	Status int
	// Name, Code and Message are Datera's error fields; Errors holds validation details.
	Name    string
	Code    int
	Message string
	Errors  []string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "datera %s %s: HTTP %d", e.Method, e.Path, e.Status)
	if e.Name != "" {
		fmt.Fprintf(&b, " %s", e.Name)
	}
	if e.Code != 0 {
		fmt.Fprintf(&b, " (code %d)", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if len(e.Errors) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(e.Errors, "; "))
	}
	return b.String()
}

// Is maps the error onto the class sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound || e.Name == NameNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict || e.Name == NameConflict
	case ErrAuth:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden ||
			e.Name == NameAuthFailed || e.Name == NamePermissionDenied
	case ErrValidation:
		return e.Status == http.StatusBadRequest || e.Status == http.StatusUnprocessableEntity ||
			e.Name == NameInvalidRequest || e.Name == NameValidationFailed
	case ErrUnavailable:
		return e.retryable()
	}
	return false
}

// retryable reports the server-side conditions worth waiting out.
func (e *APIError) retryable() bool {
	return e.Status == http.StatusServiceUnavailable ||
		(e.Status == http.StatusInternalServerError && strings.Contains(e.Message, initializingMessage))
}

// ValidationError is input the client refused to send.
type ValidationError struct {
	Field  string
	Value  any
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("datera: invalid %s %v: %s", e.Field, e.Value, e.Reason)
}

// Is makes a ValidationError match ErrValidation.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }
