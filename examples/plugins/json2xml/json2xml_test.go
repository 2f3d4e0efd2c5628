package json2xml

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// upstreamResp is what the upstream answers in a case.
type upstreamResp struct {
	status int
	header map[string]string
	body   string
}

// cases run natively here and interpreted in interp_test.go.
var cases = []struct {
	name     string
	config   string
	accept   string
	upstream upstreamResp
	status   int
	ctype    string
	body     string
	absent   []string // response headers that must be gone
}{
	{
		name:   "object to XML, status kept, validators dropped",
		accept: "application/xml",
		upstream: upstreamResp{201, map[string]string{"Content-Type": "application/json", "ETag": `"abc"`, "Last-Modified": "Mon, 02 Jan 2006 15:04:05 GMT"},
			`{"id":7,"name":"Ann & <Bob>","tags":["a","b"],"price":12.50,"ok":true,"note":null,"owner":{"login":"ann"}}`},
		status: 201,
		ctype:  "application/xml; charset=utf-8",
		body: `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
			`<response><id>7</id><name>Ann &amp; &lt;Bob&gt;</name><tags><item>a</item><item>b</item></tags><price>12.50</price>` +
			`<ok>true</ok><note/><owner><login>ann</login></owner></response>` + "\n",
		absent: []string{"Etag"},
	},
	{
		name:     "error body keeps its status",
		accept:   "text/html, text/xml;q=0.5",
		upstream: upstreamResp{404, map[string]string{"Content-Type": "application/problem+json"}, `{"title":"not found"}`},
		status:   404,
		ctype:    "application/xml; charset=utf-8",
		body:     `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<response><title>not found</title></response>` + "\n",
	},
	{
		name:     "keys that are not XML names",
		config:   `{"root":"doc","item":"entry"}`,
		accept:   "application/xml",
		upstream: upstreamResp{200, map[string]string{"Content-Type": "application/json; charset=utf-8"}, `[{"first name":1,"2x":2,"a:b":3,"ünï":4}]`},
		status:   200,
		ctype:    "application/xml; charset=utf-8",
		body: `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
			`<doc><entry><first_name key="first name">1</first_name><_2x key="2x">2</_2x><a_b key="a:b">3</a_b><ünï>4</ünï></entry></doc>` + "\n",
	},
	{
		name:     "client that does not ask for XML gets JSON",
		upstream: upstreamResp{200, map[string]string{"Content-Type": "application/json"}, `{"a":1}`},
		status:   200, ctype: "application/json", body: `{"a":1}`,
	},
	{
		name:     "XML refused with q=0",
		accept:   "application/xml;q=0, application/json",
		upstream: upstreamResp{200, map[string]string{"Content-Type": "application/json"}, `{"a":1}`},
		status:   200, ctype: "application/json", body: `{"a":1}`,
	},
	{
		name:     "every client when accept is empty",
		config:   `{"accept":[]}`,
		upstream: upstreamResp{200, map[string]string{"Content-Type": "application/json"}, `true`},
		status:   200, ctype: "application/xml; charset=utf-8",
		body: `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<response>true</response>` + "\n",
	},
	{
		name:     "not JSON passes through",
		accept:   "application/xml",
		upstream: upstreamResp{200, map[string]string{"Content-Type": "text/plain"}, `{"a":1}`},
		status:   200, ctype: "text/plain", body: `{"a":1}`,
	},
	{
		name:     "invalid JSON passes through",
		accept:   "application/xml",
		upstream: upstreamResp{502, map[string]string{"Content-Type": "application/json"}, `{"a":`},
		status:   502, ctype: "application/json", body: `{"a":`,
	},
	{
		name:     "body larger than maxBytes passes through",
		config:   `{"maxBytes":8}`,
		accept:   "application/xml",
		upstream: upstreamResp{200, map[string]string{"Content-Type": "application/json"}, `{"long":"0123456789"}`},
		status:   200, ctype: "application/json", body: `{"long":"0123456789"}`,
	},
	{
		name:     "compressed body passes through",
		accept:   "application/xml",
		upstream: upstreamResp{200, map[string]string{"Content-Type": "application/json", "Content-Encoding": "br"}, `not really brotli`},
		status:   200, ctype: "application/json", body: `not really brotli`,
	},
}

// upstream answers as the case says, and fails the request if it was not
// asked for uncompressed JSON when the client wants XML.
func upstream(t *testing.T, u upstreamResp, wantsXML bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantsXML && (r.Header.Get("Accept") != "application/json" || r.Header.Get("Accept-Encoding") != "") {
			t.Errorf("upstream asked for Accept %q, Accept-Encoding %q", r.Header.Get("Accept"), r.Header.Get("Accept-Encoding"))
		}
		for k, v := range u.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(u.status)
		// In two writes, as a streaming upstream would.
		half := len(u.body) / 2
		_, _ = io.WriteString(w, u.body[:half])
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, u.body[half:])
	})
}

func decode(t *testing.T, s string) *Config {
	t.Helper()
	c := CreateConfig()
	if s != "" {
		if err := json.Unmarshal([]byte(s), c); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// run sends the case's request through h on a real socket and checks the
// response.
func run(t *testing.T, h http.Handler, i int) {
	t.Helper()
	tc := cases[i]
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	if tc.accept != "" {
		req.Header.Set("Accept", tc.accept)
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.ctype || string(b) != tc.body {
		t.Fatalf("got %d %q\n%s\nwant %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b, tc.status, tc.ctype, tc.body)
	}
	if tc.ctype == "application/xml; charset=utf-8" && resp.Header.Get("Content-Length") != strconv.Itoa(len(b)) {
		t.Errorf("Content-Length %q for %d bytes", resp.Header.Get("Content-Length"), len(b))
	}
	if cfg := decode(t, tc.config); len(cfg.Accept) > 0 && resp.Header.Get("Vary") != "Accept" {
		t.Errorf("Vary = %q, want Accept (the representation depends on it)", resp.Header.Get("Vary"))
	}
	for _, k := range tc.absent {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("%s = %q, want it dropped", k, v)
		}
	}
	if lm := tc.upstream.header["Last-Modified"]; lm != "" && resp.Header.Get("Last-Modified") != lm {
		t.Errorf("Last-Modified dropped")
	}
}

func TestNative(t *testing.T) {
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(context.Background(), upstream(t, tc.upstream, tc.ctype == "application/xml; charset=utf-8"), decode(t, tc.config), "json2xml")
			if err != nil {
				t.Fatal(err)
			}
			run(t, h, i)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for config, want := range map[string]string{
		`{"root":"1st"}`:         `root: "1st" is not an XML element name`,
		`{"item":"a b"}`:         `item: "a b" is not an XML element name`,
		`{"maxBytes":-1}`:        "maxBytes: must be positive, got -1",
		`{"accept":["text/;x"]}`: `accept[0]: "text/;x" is not a media type`,
	} {
		_, err := New(context.Background(), http.NotFoundHandler(), decode(t, config), "json2xml")
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", config, err, want)
		}
	}
}

func TestDeepNestingIsRefused(t *testing.T) {
	deep := ""
	for range maxDepth + 2 {
		deep += "["
	}
	if _, err := convert([]byte(deep), "r", "i"); err == nil {
		t.Fatal("converted a body nested beyond maxDepth")
	}
}
