package cellar

import (
	"errors"
	"fmt"
)

// Error codes. Only the HTTP layer maps them to status codes.
const (
	EINVALID         = "invalid_argument"
	EUNAUTHENTICATED = "unauthenticated"
	EPERMISSION      = "permission_denied"
	ENOTFOUND        = "not_found"
	ECONFLICT        = "conflict"
	ETOOLARGE        = "too_large"
	EUNAVAILABLE     = "unavailable"
	EINTERNAL        = "internal"
)

// Error is cellar's error type: a machine-readable code and a message safe to
// show to the client. Internal failures are wrapped with EINTERNAL and keep
// their cause for logging.
type Error struct {
	Code    string
	Message string
	Err     error // cause, for logs; never shown to clients
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, cellar.ErrNotFound) works for any not-found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Err == nil && t.Code == e.Code
}

// Sentinels for errors.Is; they match any *Error with the same code.
var (
	ErrInvalid          = &Error{Code: EINVALID}
	ErrUnauthenticated  = &Error{Code: EUNAUTHENTICATED}
	ErrPermissionDenied = &Error{Code: EPERMISSION}
	ErrNotFound         = &Error{Code: ENOTFOUND}
	ErrConflict         = &Error{Code: ECONFLICT}
	ErrTooLarge         = &Error{Code: ETOOLARGE}
	ErrUnavailable      = &Error{Code: EUNAVAILABLE}
	ErrInternal         = &Error{Code: EINTERNAL}
)

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Unavailable wraps cause as an unavailable error with a client-safe message.
func Unavailable(cause error, format string, args ...any) *Error {
	return &Error{Code: EUNAVAILABLE, Message: fmt.Sprintf(format, args...), Err: cause}
}

// Internal wraps cause as an internal error. Its message is not shown to clients.
func Internal(cause error, format string, args ...any) *Error {
	return &Error{Code: EINTERNAL, Message: fmt.Sprintf(format, args...), Err: cause}
}

// ErrorCode returns the code of err: the code of the first *Error in its
// chain, or EINTERNAL for any other non-nil error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err. Internal errors and
// errors that are not *Error read "internal error".
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) && e.Code != EINTERNAL {
		return e.Message
	}
	return "internal error"
}
