package proxyerr

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Class is a failure class. The zero Class means success.
type Class uint8

// Classes, one per distinct status or handling.
const (
	OK          Class = iota
	BadRequest        // malformed or over-limit request: 400/431
	NoRoute           // Host names no meshed service/port: 404
	Denied            // access control: 403
	RateLimited       // token bucket empty: 429
	NoEndpoint        // no endpoint at all: 503
	CircuitOpen       // breaker open: 503
	Timeout           // per-try or overall timeout, dial timeout: 504
	Refused           // connection to the pod refused or unreachable: 502
	Reset             // connection reset / closed mid-request: 502
	Upstream          // other upstream protocol failure: 502
	ClientGone        // the client went away: 499 (logged, never written)
	Internal          // a bug, e.g. a recovered panic: 500
	numClasses
)

var names = [numClasses]string{"ok", "bad_request", "no_route", "denied", "rate_limited",
	"no_endpoint", "circuit_open", "timeout", "refused", "reset", "upstream", "client_gone", "internal"}

var statuses = [numClasses]int{200, 400, 404, 403, 429, 503, 503, 504, 502, 502, 502, 499, 500}

// String is the metric/log label of c.
func (c Class) String() string {
	if c < numClasses {
		return names[c]
	}
	return "unknown"
}

// Status is the one HTTP status for c.
func (c Class) Status() int {
	if c < numClasses {
		return statuses[c]
	}
	return 500
}

// Error is a classified failure with a human-readable reason that is safe
// to show the client (it names policy objects, never internals).
type Error struct {
	Class  Class
	Reason string
	Err    error // cause, optional
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Class.String() + ": " + e.Reason + ": " + e.Err.Error()
	}
	return e.Class.String() + ": " + e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

// New returns a classified error.
func New(c Class, reason string) *Error { return &Error{Class: c, Reason: reason} }

// Wrap classifies err with a reason.
func Wrap(c Class, reason string, err error) *Error {
	return &Error{Class: c, Reason: reason, Err: err}
}

// Classify returns the class of err. It is the single mapping from Go
// errors to failure classes; nil is OK.
func Classify(err error) Class {
	if err == nil {
		return OK
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Class
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return Timeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	if errors.Is(err, context.Canceled) {
		return ClientGone
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTDOWN) {
		return Refused
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return Refused
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return Reset
	}
	return Upstream
}

// Status maps err to its HTTP status and class.
func Status(err error) (int, Class) {
	c := Classify(err)
	return c.Status(), c
}

// Reason returns the client-safe reason of err: the Reason of an *Error,
// or a generic text per class.
func Reason(err error) string {
	var pe *Error
	if errors.As(err, &pe) && pe.Reason != "" {
		return pe.Reason
	}
	switch Classify(err) {
	case Timeout:
		return "upstream timed out"
	case Refused:
		return "upstream refused the connection"
	case Reset:
		return "upstream reset the connection"
	case ClientGone:
		return "client went away"
	case OK:
		return ""
	}
	return "upstream failed"
}

// IsDialError reports whether err happened while connecting, before any
// byte of the request was sent (safe to retry any method).
func IsDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
