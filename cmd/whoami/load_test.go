package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoadCountsEveryFailure: against a real whoami whose every 5th answer
// is a 503 and whose listener closes midway, the report counts every
// request, names every failure and attributes the successes to the pod.
func TestLoadCountsEveryFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	inner := handler("pod-a")
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%5 == 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	var out bytes.Buffer
	if err := runLoad(context.Background(), loadOptions{url: "http://" + l.Addr().String() + "/", qps: 200, duration: time.Second, timeout: time.Second}, &out); err != nil {
		t.Fatal(err)
	}
	var rep loadReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if rep.Requests < 150 || rep.Requests > 210 {
		t.Errorf("%d requests in 1s at 200/s", rep.Requests)
	}
	if rep.OK+rep.Failed != rep.Requests || rep.Failed != rep.Statuses["503"] || rep.Failed < rep.Requests/6 {
		t.Errorf("counts do not add up: %+v", rep)
	}
	if rep.Answers["pod-a"] != rep.OK {
		t.Errorf("answers %v, ok %d", rep.Answers, rep.OK)
	}
	if len(rep.Failures) == 0 || !strings.Contains(rep.Failures[0].Error, "status 503") {
		t.Errorf("failures %v", rep.Failures)
	}

	// A server that is gone: every request fails with the transport error.
	_ = srv.Close()
	out.Reset()
	if err := runLoad(context.Background(), loadOptions{url: "http://" + l.Addr().String() + "/", qps: 50, duration: 300 * time.Millisecond, timeout: time.Second}, &out); err != nil {
		t.Fatal(err)
	}
	rep = loadReport{}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Requests == 0 || rep.Failed != rep.Requests || !strings.Contains(rep.Failures[0].Error, "refused") {
		t.Errorf("against a closed port: %+v", rep)
	}
}

func TestLoadRefusesBadOptions(t *testing.T) {
	for _, o := range []loadOptions{{url: "http://x/", qps: 0, duration: time.Second}, {url: "http://x/", qps: 10, duration: 0}} {
		if err := runLoad(context.Background(), o, &bytes.Buffer{}); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
