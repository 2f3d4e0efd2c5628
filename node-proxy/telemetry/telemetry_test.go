package telemetry

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"
)

func TestParseTraceparent(t *testing.T) {
	const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	cases := []struct {
		in string
		ok bool
	}{
		{good, true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", false}, // v00 is exact
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"", false},
	}
	for _, tc := range cases {
		got, ok := ParseTraceparent(tc.in)
		if ok != tc.ok {
			t.Errorf("%q: ok=%v want %v", tc.in, ok, tc.ok)
		}
		if ok && tc.in == good && got.String() != good {
			t.Errorf("round trip: %s", got.String())
		}
	}
}

func TestChild(t *testing.T) {
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	out, parent, cont := Child(in)
	if !cont || out.TraceIDString() != "4bf92f3577b34da6a3ce929d0e0e4736" || out.Flags != 1 {
		t.Fatalf("trace not continued: %s", out)
	}
	if out.String() == in || parent != [8]byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7} {
		t.Fatal("the proxy hop must get its own span id and record the parent")
	}
	fresh, _, cont := Child("garbage")
	if cont {
		t.Fatal("garbage continued")
	}
	if _, ok := ParseTraceparent(fresh.String()); !ok || fresh.Flags != 0 {
		t.Fatalf("new trace invalid or sampled: %s", fresh)
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tc, ok := ParseTraceparent(s)
		if !ok {
			return
		}
		// Whatever parses re-parses to the same value.
		again, ok := ParseTraceparent(tc.String())
		if !ok || again != tc {
			t.Fatalf("%q parsed to %s which does not round-trip", s, tc)
		}
	})
}

func TestAccessLogSampling(t *testing.T) {
	var buf bytes.Buffer
	l := NewAccessLogger(zapcore.AddSync(&buf), Sampling{First: 3, Thereafter: 0})
	for i := 0; i < 10; i++ {
		l.Info("request")
	}
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Fatalf("logged %d lines, want 3", n)
	}
}

func TestMetricsRegister(t *testing.T) {
	m := NewMetrics()
	m.SetConfigVersion("a")
	m.SetConfigVersion("b")
	if n := testutil.CollectAndCount(m.ConfigInfo); n != 1 {
		t.Fatalf("%d config_info series, want 1", n)
	}
	if CodeClass(204) != "2xx" || CodeClass(503) != "5xx" || CodeClass(101) != "1xx" {
		t.Fatal("code class")
	}
}
