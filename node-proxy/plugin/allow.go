package plugin

import (
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/traefik/yaegi/interp"

	"github.com/trellis-mesh/trellis/node-proxy/plugin/symbols"
)

// The allow-list: the standard-library packages a plugin may import. A
// plugin runs inside the proxy, so the list keeps out what would let it act
// outside its request: files (os, io/fs, path/filepath), processes
// (os/exec), raw sockets and DNS (most of net), listeners (http.Server,
// httptest.Server), the proxy's memory (unsafe, reflect, runtime) and the
// system (syscall). Outbound HTTP through net/http's client is allowed:
// calling an authorization service is what many middlewares are for.
//
// A package is either allowed whole (nil rule), allowed except some
// symbols (deny), or allowed for some symbols only (only). Symbols a
// wrapper type of yaegi needs ("_Name") follow their type.

// rule restricts one allowed package.
type rule struct {
	deny map[string]string // symbol → why it is not available
	only map[string]bool   // when set, the only symbols available
	why  string            // why the rest of the package is not available (with only)
}

const (
	whyListen = "it opens a listener; a plugin handles requests the proxy receives"
	whyFile   = "it reads or serves files; plugins have no file system access"
	whyGlobal = "it changes state shared by the whole proxy"
	whyDial   = "it opens raw connections or does DNS lookups; use net/http's client for outbound HTTP"
)

var allowed = map[string]*rule{
	"bufio":                nil,
	"bytes":                nil,
	"cmp":                  nil,
	"compress/bzip2":       nil,
	"compress/flate":       nil,
	"compress/gzip":        nil,
	"compress/lzw":         nil,
	"compress/zlib":        nil,
	"container/heap":       nil,
	"container/list":       nil,
	"container/ring":       nil,
	"context":              nil,
	"crypto":               nil,
	"crypto/aes":           nil,
	"crypto/cipher":        nil,
	"crypto/ecdh":          nil,
	"crypto/ecdsa":         nil,
	"crypto/ed25519":       nil,
	"crypto/elliptic":      nil,
	"crypto/hmac":          nil,
	"crypto/md5":           nil,
	"crypto/rand":          nil,
	"crypto/rsa":           nil,
	"crypto/sha1":          nil,
	"crypto/sha256":        nil,
	"crypto/sha512":        nil,
	"crypto/subtle":        nil,
	"crypto/x509/pkix":     nil,
	"encoding":             nil,
	"encoding/ascii85":     nil,
	"encoding/asn1":        nil,
	"encoding/base32":      nil,
	"encoding/base64":      nil,
	"encoding/binary":      nil,
	"encoding/csv":         nil,
	"encoding/hex":         nil,
	"encoding/json":        nil,
	"encoding/pem":         nil,
	"encoding/xml":         nil,
	"errors":               nil,
	"fmt":                  nil,
	"hash":                 nil,
	"hash/adler32":         nil,
	"hash/crc32":           nil,
	"hash/crc64":           nil,
	"hash/fnv":             nil,
	"hash/maphash":         nil,
	"html":                 nil,
	"io":                   nil,
	"log":                  nil, // to the proxy's log; Fatal panics instead of exiting
	"maps":                 nil,
	"math":                 nil,
	"math/big":             nil,
	"math/bits":            nil,
	"math/cmplx":           nil,
	"math/rand":            nil,
	"math/rand/v2":         nil,
	"mime/multipart":       nil,
	"mime/quotedprintable": nil,
	"net/http/cookiejar":   nil,
	"net/http/httptrace":   nil,
	"net/http/httputil":    nil,
	"net/mail":             nil,
	"net/netip":            nil,
	"net/textproto":        nil,
	"net/url":              nil,
	"path":                 nil,
	"regexp":               nil,
	"regexp/syntax":        nil,
	"slices":               nil,
	"sort":                 nil,
	"strconv":              nil,
	"strings":              nil,
	"sync":                 nil,
	"sync/atomic":          nil,
	"text/scanner":         nil,
	"text/tabwriter":       nil,
	"text/template/parse":  nil,
	"time":                 nil,
	"unicode":              nil,
	"unicode/utf16":        nil,
	"unicode/utf8":         nil,
	"crypto/x509":          {deny: map[string]string{"SetFallbackRoots": whyGlobal}},
	"mime":                 {deny: map[string]string{"AddExtensionType": whyGlobal}},
	"text/template":        {deny: map[string]string{"ParseFiles": whyFile, "ParseGlob": whyFile, "ParseFS": whyFile}},
	"html/template":        {deny: map[string]string{"ParseFiles": whyFile, "ParseGlob": whyFile, "ParseFS": whyFile}},
	"net/http/httptest":    {deny: map[string]string{"NewServer": whyListen, "NewTLSServer": whyListen, "NewUnstartedServer": whyListen, "Server": whyListen}},
	"io/ioutil":            {only: set("ReadAll", "NopCloser", "Discard"), why: whyFile},
	"net":                  {only: netPure, why: whyDial},
	"crypto/tls": {deny: map[string]string{
		"Dial": whyDial, "DialWithDialer": whyDial, "Dialer": whyDial, "Listen": whyListen,
		"NewListener": whyListen, "LoadX509KeyPair": whyFile, "QUICClient": whyDial, "QUICServer": whyListen,
	}},
	"net/http": {deny: map[string]string{
		"ListenAndServe": whyListen, "ListenAndServeTLS": whyListen, "Serve": whyListen,
		"ServeTLS": whyListen, "Server": whyListen, "FileServer": whyFile, "FileServerFS": whyFile,
		"FS": whyFile, "Dir": whyFile, "ServeFile": whyFile, "ServeFileFS": whyFile,
		"NewFileTransport": whyFile, "NewFileTransportFS": whyFile,
		"Handle": whyGlobal, "HandleFunc": whyGlobal, "DefaultServeMux": whyGlobal,
		"ServerContextKey": "it reaches the proxy's own HTTP server (which could be closed)",
	}},
}

// netPure is the part of package net that only parses and formats
// addresses (what IP allow-lists and real-IP plugins use).
var netPure = set("CIDRMask", "IPv4", "IPv4Mask", "IPv4len", "IPv6len", "IPv4allrouter", "IPv4allsys",
	"IPv4bcast", "IPv4zero", "IPv6interfacelocalallnodes", "IPv6linklocalallnodes", "IPv6linklocalallrouters",
	"IPv6loopback", "IPv6unspecified", "IPv6zero", "JoinHostPort", "SplitHostPort", "ParseCIDR", "ParseIP",
	"ParseMAC", "TCPAddrFromAddrPort", "UDPAddrFromAddrPort", "ErrClosed", "Addr", "AddrError", "Error",
	"HardwareAddr", "IP", "IPAddr", "IPMask", "IPNet", "InvalidAddrError", "ParseError", "TCPAddr",
	"UDPAddr", "UnixAddr", "UnknownNetworkError", "OpError", "DNSError", "Conn", "Pipe", "Buffers")

// forbidden explains the packages most often asked for.
var forbidden = map[string]string{
	"os":            "plugins have no file, process or environment access; write logs with fmt or log (they reach the proxy log)",
	"os/exec":       "plugins cannot start processes",
	"syscall":       "plugins cannot make system calls",
	"unsafe":        "plugins cannot address memory directly",
	"reflect":       "reflection reaches unexported state of the proxy's objects; decode with encoding/json",
	"runtime":       "plugins cannot change the proxy's runtime",
	"runtime/debug": "plugins cannot change the proxy's runtime",
	"plugin":        "plugins cannot load native code",
	"io/fs":         "plugins have no file system access",
	"path/filepath": "plugins have no file system access; use path for slash-separated paths",
	"expvar":        "it registers handlers on the process-wide mux",
	"log/slog":      "use log or fmt; they reach the proxy log with the plugin's name",
}

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// AllowedPackages returns the import paths a plugin may use, sorted.
func AllowedPackages() []string {
	return slices.Sorted(maps.Keys(allowed))
}

// checkImport says why path may not be imported, or "" when it may.
func checkImport(path string) string {
	if _, ok := allowed[path]; ok {
		return ""
	}
	if why, ok := forbidden[path]; ok {
		return why
	}
	return "it is not on the plugin allow-list of standard-library packages (docs/plugins.md#allow-list)"
}

// checkSymbol says why pkg.sym may not be used, or "" when it may.
func checkSymbol(pkg, sym string) string {
	r := allowed[pkg]
	if r == nil {
		return ""
	}
	if why, ok := r.deny[sym]; ok {
		return why
	}
	if r.only != nil && !r.only[sym] && !strings.HasPrefix(sym, "_") {
		return r.why
	}
	return ""
}

// baseSymbols is the symbol tables of the allowed packages (package
// symbols, generated for exactly the allow-list) without the symbols the
// rules deny. It is built on the first plugin load, once: a proxy without
// plugins never runs the code that builds the tables. Its variables are
// still the process's own: privateVars copies them per interpreter.
var baseSymbols = sync.OnceValue(buildSymbols)

func buildSymbols() interp.Exports {
	out := allowedSymbols(symbols.Build())
	out[fmtKey] = out["fmt/fmt"]
	delete(out, "fmt/fmt")
	return out
}

// fmtKey is the key of package fmt in the tables given to the
// interpreter. yaegi takes a key's directory as the import path and its
// last element as the package name, so this is package fmt; but it is not
// "fmt/fmt", the key that makes yaegi's Use also compile the generic
// packages into every interpreter (see Program.overrides).
const fmtKey = "fmt/./fmt"

// allowedSymbols drops from all what the allow-list does not allow.
func allowedSymbols(all symbols.Table) interp.Exports {
	out := interp.Exports{}
	for key, syms := range all {
		pkg := strings.TrimSuffix(key, "/"+pathBase(key))
		if key == "." {
			out[key] = syms // wrappers for composed interfaces, no symbols
			continue
		}
		if _, ok := allowed[pkg]; !ok {
			continue
		}
		m := make(map[string]reflect.Value, len(syms))
		for name, v := range syms {
			sym := strings.TrimPrefix(name, "_")
			if checkSymbol(pkg, sym) != "" {
				continue
			}
			m[name] = v
		}
		out[key] = m
	}
	return out
}

func pathBase(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[i+1:]
	}
	return key
}

// privateVars returns, for one interpreter, a copy of every package
// variable of the allowed packages: a plugin assigning io.EOF or
// http.DefaultTransport changes its own copy, never the proxy's. What a
// variable points to is still shared (a plugin could write through
// *base64.StdEncoding), except for http.DefaultClient and
// http.DefaultTransport, which are the plugin's own.
func privateVars() interp.Exports {
	out := interp.Exports{}
	for key, syms := range baseSymbols() {
		var m map[string]reflect.Value
		for name, v := range syms {
			if !v.IsValid() || !v.CanSet() {
				continue
			}
			if m == nil {
				m = map[string]reflect.Value{}
			}
			cell := reflect.New(v.Type()).Elem()
			cell.Set(v)
			m[name] = cell
		}
		if m != nil {
			out[key] = m
		}
	}
	if h := out["net/http/http"]; h != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		var rt http.RoundTripper = t
		h["DefaultTransport"] = reflect.ValueOf(&rt).Elem()
		c := &http.Client{Transport: t}
		h["DefaultClient"] = reflect.ValueOf(&c).Elem()
	}
	return out
}

// composedWrappers lets the interpreter hand compiled code a plugin's
// ResponseWriter that also flushes as an http.Flusher (its plain wrapper
// has the three ResponseWriter methods only, and the proxy flushes
// streamed responses and gRPC through whatever writer the plugin passes).
var composedWrappers = sync.OnceValue(func() interp.Exports {
	rw := baseSymbols()["net/http/http"]["_ResponseWriter"]
	return interp.Exports{".": {"MapTypes": reflect.ValueOf(map[reflect.Value][]reflect.Type{
		rw: {reflect.TypeFor[responseFlusher]()},
	})}}
})

// responseFlusher wraps an interpreted http.ResponseWriter with a Flush
// method. The interpreter fills the fields: IValue with the value, W<name>
// with its methods.
type responseFlusher struct {
	IValue       any
	WFlush       func()
	WHeader      func() http.Header
	WWrite       func(a0 []byte) (int, error)
	WWriteHeader func(statusCode int)
}

func (w responseFlusher) Flush()                      { w.WFlush() }
func (w responseFlusher) Header() http.Header         { return w.WHeader() }
func (w responseFlusher) Write(b []byte) (int, error) { return w.WWrite(b) }
func (w responseFlusher) WriteHeader(code int)        { w.WWriteHeader(code) }
