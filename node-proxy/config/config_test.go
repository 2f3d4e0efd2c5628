package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kjson "sigs.k8s.io/json"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func loadValid(t testing.TB) *Config {
	t.Helper()
	c, err := LoadFile(filepath.Join("testdata", "valid.json"))
	if err != nil {
		t.Fatalf("valid.json must load: %v", err)
	}
	return c
}

func TestValidFileLoads(t *testing.T) {
	c := loadValid(t)
	if !strings.HasPrefix(c.Version, HashPrefix) || c.Version != c.Hash() {
		t.Fatalf("version %q should be filled with Hash() %q", c.Version, c.Hash())
	}
	if got := c.Services[0].Resilience.Retries.PerTryTimeout.D().String(); got != "2s" {
		t.Fatalf("perTryTimeout decoded as %s", got)
	}
	// Round trip: encoding and decoding again gives the same hash.
	var buf bytes.Buffer
	if err := c.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	c2, err := Decode(&buf)
	if err != nil {
		t.Fatalf("re-decode: %v", err)
	}
	if c2.Hash() != c.Hash() || c2.Version != c.Version {
		t.Fatalf("hash changed across a round trip: %s vs %s", c2.Hash(), c.Hash())
	}
}

func TestHashChangesWithContent(t *testing.T) {
	a := loadValid(t)
	b := loadValid(t)
	b.Services[0].Endpoints[0].Ready = false
	if a.Hash() == b.Hash() {
		t.Fatal("hash must change when an endpoint's readiness changes")
	}
	b.Version = "something-else"
	b.Services[0].Endpoints[0].Ready = true
	if a.Hash() != b.Hash() {
		t.Fatal("hash must ignore the version field")
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *Config)
		want   []string // each must appear in the error
	}{
		{"missing node", func(c *Config) { c.Node = "" }, []string{"node: must name"}},
		{"bad acl", func(c *Config) { c.ACL = "yes" }, []string{`acl: must be "on" or "off"`}},
		{"bad domain", func(c *Config) { c.MeshDomain = "Mesh_X" }, []string{"meshDomain:"}},
		{"target port", func(c *Config) { c.Services[3].Ports[0].TargetPort = 0 },
			[]string{"services[3].ports[0].targetPort: must be 1-65535, got 0"}},
		{"duplicate port", func(c *Config) { c.Services[1].Ports[1].Port = 80 },
			[]string{"services[1].ports[1].port: 80 is also ports[0].port"}},
		{"bad protocol", func(c *Config) { c.Services[3].Ports[0].Protocol = "sctp" },
			[]string{`services[3].ports[0].protocol: must be http, tcp or udp, got "sctp"`}},
		{"scheme on tcp", func(c *Config) { c.Services[3].Ports[0].Scheme = SchemeH2C },
			[]string{"services[3].ports[0].scheme: is only for http ports"}},
		{"listen port on http", func(c *Config) { c.Services[1].Ports[0].ListenPort = 9999 },
			[]string{"services[1].ports[0].listenPort: must be 0 for http ports"}},
		{"missing listen port", func(c *Config) { c.Services[3].Ports[0].ListenPort = 0 },
			[]string{"services[3].ports[0].listenPort: must be 1-65535"}},
		{"tcp listen port clash", func(c *Config) {
			c.Services[3].Ports = append(c.Services[3].Ports, ServicePort{Name: "x", Port: 1, TargetPort: 1, Protocol: ProtocolTCP, ListenPort: 20001})
		}, []string{"services[3].ports[2].listenPort: tcp port 20001 is already used by services[3].ports[0]"}},
		{"tcp listen port is http listener", func(c *Config) { c.Services[3].Ports[0].ListenPort = 15080 },
			[]string{"services[3].ports[0].listenPort: 15080 is listeners.http"}},
		{"bad endpoint ip", func(c *Config) { c.Services[0].Endpoints[1].IP = "10.0.2" },
			[]string{`services[0].endpoints[1].ip: "10.0.2" is not an IP address`}},
		{"duplicate endpoint", func(c *Config) { c.Services[0].Endpoints[1].IP = "10.0.1.5" },
			[]string{"services[0].endpoints[1].ip: 10.0.1.5 is also endpoints[0].ip"}},
		{"endpoint port override names nothing", func(c *Config) { c.Services[0].Endpoints[1].Ports = map[string]int32{"nope": 1} },
			[]string{`services[0].endpoints[1].ports[nope]: no port of this Service is named "nope"`}},
		{"dangling split backend", func(c *Config) { c.Services[0].Split.Backends[1].Service = "api-v3" },
			[]string{"services[0].split.backends[1].service: Service shop/api-v3 is not in services"}},
		{"backend lacks port", func(c *Config) { c.Services[2].Ports = c.Services[2].Ports[:1] },
			[]string{"services[0].split.backends[1].service: backend shop/api-v2 has no port 9090"}},
		{"zero weights", func(c *Config) {
			c.Services[0].Split.Backends[0].Weight = 0
			c.Services[0].Split.Backends[1].Weight = 0
		},
			[]string{"services[0].split.backends: all weights are 0"}},
		{"negative weight", func(c *Config) { c.Services[0].Split.Backends[0].Weight = -1 },
			[]string{"services[0].split.backends[0].weight: must not be negative"}},
		{"bad split match", func(c *Config) { c.Services[0].Split.Matches[0].PathRegex = "(" },
			[]string{"services[0].split.matches[0]: pathRegex"}},
		{"matches on tcp root", func(c *Config) {
			c.Services[3].Split = &Split{Backends: []Backend{{Service: "db", Weight: 1}}, Matches: c.Services[0].Split.Matches}
		}, []string{"services[3].split.matches: HTTP matches need every port of shop/db to be http"}},
		{"rule without source", func(c *Config) { c.Services[0].Rules[0].Source = "" },
			[]string{"services[0].rules[0].source: must say which policy"}},
		{"rule port not on service", func(c *Config) { c.Services[0].Rules[0].Ports = []int32{81} },
			[]string{"services[0].rules[0].ports[0]: 81 is not a port of Service shop/api"}},
		{"rule bad identity", func(c *Config) { c.Services[0].Rules[0].Sources[0].ServiceAccount = "" },
			[]string{`services[0].rules[0].sources[0].serviceAccount: "" is not a valid ServiceAccount name`}},
		{"rule bad method", func(c *Config) { c.Services[0].Rules[0].HTTP[0].Methods = []string{"G ET"} },
			[]string{"services[0].rules[0].http[0]: methods[0]"}},
		{"duplicate service", func(c *Config) { c.Services[2].Name = "api-v1" },
			[]string{"services[2]: Service shop/api-v1 is listed twice (also services[1])"}},
		{"bad service name", func(c *Config) { c.Services[3].Name = "DB" },
			[]string{`services[3].name: "DB" is not a valid Service name`}},
		{"duplicate local pod", func(c *Config) { c.LocalPods[1].IP = "10.0.1.9" },
			[]string{"localPods[1].ip: 10.0.1.9 is also localPods[0].ip"}},
		{"retries attempts", func(c *Config) { c.Services[0].Resilience.Retries.Attempts = 0 },
			[]string{"services[0].resilience.retries.attempts: must be 1-10"}},
		{"retry budget", func(c *Config) { c.Services[0].Resilience.Retries.Budget = 2 },
			[]string{"services[0].resilience.retries.budget: must be 0-1"}},
		{"retry on", func(c *Config) { c.Services[0].Resilience.Retries.On = []int32{42} },
			[]string{"services[0].resilience.retries.on[0]: must be an HTTP status"}},
		{"breaker empty", func(c *Config) { c.Services[0].Resilience.CircuitBreaker = &CircuitBreaker{} },
			[]string{"services[0].resilience.circuitBreaker: set consecutiveFailures, failureRatio or both"}},
		{"rate limit", func(c *Config) { c.Services[0].Resilience.RateLimit.RPS = 0 },
			[]string{"services[0].resilience.rateLimit.rps: must be > 0"}},
		{"outlier percent", func(c *Config) { c.Services[0].Resilience.Outlier.MaxEjectedPercent = 101 },
			[]string{"services[0].resilience.outlier.maxEjectedPercent: must be 0-100"}},
		{"plugin", func(c *Config) {
			c.Plugins = []Plugin{{Name: "a", Version: "1", Module: "example.com/a", Files: map[string]string{"a.go": "package a"}}, {Name: "a", Module: "/x", Files: map[string]string{"../a.go": ""}, Config: []byte("{"), Stage: "late", FailurePolicy: "maybe"}}
			c.Services[0].Plugins = []string{"a", "b"}
		},
			[]string{`plugins[1].name: "a" is also plugins[0].name`, "plugins[1].version: must be set", `plugins[1].module: must be a Go import path`,
				`plugins[1].files: "../a.go": must be a relative path`, "plugins[1].config: must be JSON", `plugins[1].stage: must be "afterAccess" or "beforeAccess", got "late"`,
				`plugins[1].failurePolicy: must be "fail" or "ignore", got "maybe"`, `services[0].plugins[1]: "b" is not in plugins`}},
		{"several problems reported together", func(c *Config) { c.Node = ""; c.Services[3].Ports[0].TargetPort = 0 },
			[]string{"2 problems", "node:", "services[3].ports[0].targetPort: must be 1-65535, got 0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := loadValid(t)
			tc.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted an invalid config")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want *ValidationError, got %T", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"empty", ``, "empty input"},
		{"unknown top field", `{"node":"n","listener":{}}`, `unknown field "listener"`},
		{"unknown nested field", `{"node":"n","services":[{"namespace":"a","name":"b","ports":[{"port":1,"targetPort":1,"protocol":"http","targetport":2}]}]}`, `services[0].ports[0].targetport: unknown field; did you mean "targetPort"?`},
		{"duplicate key", `{"node":"n","node":"m"}`, "node: key appears twice"},
		{"duplicate map key", `{"node":"n","services":[{"namespace":"a","name":"b","ports":[{"name":"w","port":1,"targetPort":1,"protocol":"http"}],"endpoints":[{"ip":"1.2.3.4","ready":true,"ports":{"w":1,"w":2}}]}]}`, "services[0].endpoints[0].ports[w]: key appears twice"},
		{"plugin config is free-form", `{"node":"n","plugins":[{"name":"p","version":"1","module":"example.com/p","files":{"p.go":"package p"},"config":{"a":1,"A":2}}]}`, ""},
		{"wrong type", `{"node":"n","listeners":{"http":"80"}}`, "listeners.http: must be int32"},
		{"numeric duration", `{"node":"n","services":[{"namespace":"a","name":"b","ports":[{"port":1,"targetPort":1,"protocol":"http"}],"resilience":{"timeout":5}}]}`, `duration must be a string such as "250ms"`},
		{"bad duration", `{"node":"n","services":[{"namespace":"a","name":"b","ports":[{"port":1,"targetPort":1,"protocol":"http"}],"resilience":{"timeout":"5 parsecs"}}]}`, `duration "5 parsecs"`},
		{"trailing data", `{"node":"n"} {"node":"m"}`, "unexpected data after the JSON object"},
		{"syntax", "{\n\"node\": \"n\",,\n}", "invalid JSON at line 2"},
		{"truncated", `{"node":"n"`, "truncated JSON"},
		{"validation runs", `{"node":""}`, "node: must name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeBytes([]byte(tc.in))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("decode accepted bad input")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestInvalidGolden pins the full report for a config with many problems,
// so the wording users see is reviewed when it changes (-update rewrites).
func TestInvalidGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "invalid.json"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = DecodeBytes(in)
	if err == nil {
		t.Fatal("invalid.json was accepted")
	}
	got := []byte(err.Error() + "\n")
	golden := filepath.Join("testdata", "invalid.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("report differs from %s (run with -update if intended):\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

// FuzzDecode: no input may panic the decoder or validator, and anything
// accepted must survive an encode/decode round trip with the same hash.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"valid.json", "invalid.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"node":"n","services":[{"namespace":"a","name":"b","ports":[{"port":1,"targetPort":1,"protocol":"udp","listenPort":9}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeBytes(data)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		var buf bytes.Buffer
		if err := c.Encode(&buf); err != nil {
			t.Fatalf("encode accepted config: %v", err)
		}
		c2, err := DecodeBytes(buf.Bytes())
		if err != nil {
			t.Fatalf("re-decode of accepted config failed: %v\n%s", err, buf.Bytes())
		}
		if c2.Hash() != c.Hash() {
			t.Fatalf("hash changed across round trip")
		}
	})
}

// FuzzDecodePassesAgree: the fast strict pass and the careful explaining
// pass accept exactly the same documents, so a config is never accepted
// that the careful pass would have explained away, and every rejection
// gets its explanation.
func FuzzDecodePassesAgree(f *testing.F) {
	for _, name := range []string{"valid.json", "invalid.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		``, `null`, `1`, `{"node":"n"} `, `{"node":"n"} {}`, `{"NODE":"n"}`, `{"node":"n","Node":"m"}`, `{"node":"n","node":"m"}`,
		`{"node":"n","plugins":[{"name":"p","config":{"a":1,"a":2}}]}`,
		`{"node":"n","services":[{"namespace":"a","name":"b","ports":[{"port":1,"targetport":1}]}]}`,
		`{"node":"n","services":[{"endpoints":[{"ports":{"w":1,"w":2}}]}]}`,
		`{"node":"n","services":[{"resilience":{"timeout":5}}]}`,
		"{\"node\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Config
		strict, err := kjson.UnmarshalStrict(data, &c, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
		fastOK := err == nil && len(strict) == 0
		slowErr := careful(data)
		if fastOK != (slowErr == nil) {
			t.Fatalf("passes disagree on %q: fast %v %v, careful %v", data, strict, err, slowErr)
		}
	})
}

// TestHashDefinition recomputes Hash from its documented definition, and
// pins the hash of testdata/valid.json in testdata/valid.hash (-update
// rewrites it): a change there is a change of the contract with every
// deployed proxy.
func TestHashDefinition(t *testing.T) {
	c := loadValid(t)
	d := sha256.New()
	d.Write([]byte("trellis-config/2\n"))
	leaf := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		d.Write(s[:])
	}
	leaf(&Config{Node: c.Node, Zone: c.Zone, MeshDomain: c.MeshDomain, Listeners: c.Listeners, ACL: c.ACL, Plugins: c.Plugins})
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(c.Services)))
	d.Write(n[:])
	for i := range c.Services {
		leaf(&c.Services[i])
	}
	leaf(c.LocalPods)
	want := "sha256-tree:" + hex.EncodeToString(d.Sum(nil))
	if got := c.Hash(); got != want {
		t.Fatalf("Hash() = %s, definition gives %s", got, want)
	}
	golden := filepath.Join("testdata", "valid.hash")
	if *update {
		if err := os.WriteFile(golden, []byte(want+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if strings.TrimSpace(string(b)) != want {
		t.Fatalf("hash of valid.json changed: golden %s, now %s", strings.TrimSpace(string(b)), want)
	}
	// No local pods hash alike whether nil or empty (both encode as absent).
	e1, e2 := *c, *c
	e1.LocalPods, e2.LocalPods = nil, []LocalPod{}
	if e1.Hash() != e2.Hash() || e1.Hash() == c.Hash() {
		t.Fatal("nil and empty localPods must hash alike, and differently from some pods")
	}
	// Moving a Service changes the hash (order is part of the content).
	m := *c
	m.Services = append([]Service(nil), c.Services...)
	m.Services[0], m.Services[1] = m.Services[1], m.Services[0]
	if m.Hash() == c.Hash() {
		t.Fatal("reordering services must change the hash")
	}
}
