package proxyerr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestClassifyAndStatus(t *testing.T) {
	// A real refused dial and a real timeout, not hand-made errors only.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, refused := net.Dial("tcp", addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()

	cases := []struct {
		name   string
		err    error
		class  Class
		status int
	}{
		{"nil", nil, OK, 200},
		{"real refused dial", refused, Refused, 502},
		{"ctx deadline", ctx.Err(), Timeout, 504},
		{"wrapped deadline", fmt.Errorf("try 2: %w", context.DeadlineExceeded), Timeout, 504},
		{"os deadline", os.ErrDeadlineExceeded, Timeout, 504},
		{"canceled", context.Canceled, ClientGone, 499},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, Reset, 502},
		{"eof", io.ErrUnexpectedEOF, Reset, 502},
		{"denied", New(Denied, "no rule"), Denied, 403},
		{"rate", New(RateLimited, "x"), RateLimited, 429},
		{"no endpoint", New(NoEndpoint, "x"), NoEndpoint, 503},
		{"breaker", New(CircuitOpen, "x"), CircuitOpen, 503},
		{"no route", New(NoRoute, "x"), NoRoute, 404},
		{"wrapped classified", fmt.Errorf("outer: %w", New(Denied, "x")), Denied, 403},
		{"unknown", errors.New("weird"), Upstream, 502},
		{"http protocol", http.ErrSkipAltProtocol, Upstream, 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, c := Status(tc.err)
			if c != tc.class || st != tc.status {
				t.Fatalf("got %v/%d, want %v/%d", c, st, tc.class, tc.status)
			}
		})
	}
	if !IsDialError(refused) {
		t.Fatal("a refused dial must count as a dial error")
	}
}

func TestEveryClassHasNameAndStatus(t *testing.T) {
	for c := OK; c < numClasses; c++ {
		if c.String() == "" || c.Status() < 200 {
			t.Fatalf("class %d lacks a name or status", c)
		}
	}
	if Class(200).String() != "unknown" || Class(200).Status() != 500 {
		t.Fatal("out-of-range class must be unknown/500")
	}
}
