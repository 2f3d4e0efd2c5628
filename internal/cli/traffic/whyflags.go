package traffic

import (
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi/match"
)

// whyRequest is why's flags, checked.
type whyRequest struct {
	fromNS, fromPod string // fromNS "" = -n
	toNS, toSvc     string // toNS "" = the pod's namespace
	toPort          string // number or name; "" = the only port
	method, path    string
	query           bool // --path had a query, which matching ignores
	header          http.Header
	httpFlags       []string // HTTP-only flags that were given
}

const toForm = "SERVICE[:PORT], NAMESPACE/SERVICE[:PORT] or SERVICE.NAMESPACE[:PORT] (a mesh name such as web.shop.mesh:80 works too)"

func parseWhy(from, to, method, path string, headers []string, changed func(string) bool) (*whyRequest, error) {
	r := &whyRequest{method: method, path: path, header: http.Header{}}
	if from == "" {
		return nil, clienv.Usagef("--from is required: the client pod, POD or NAMESPACE/POD")
	}
	if to == "" {
		return nil, clienv.Usagef("--to is required: the Service called, %s", toForm)
	}
	parts := strings.Split(from, "/")
	switch len(parts) {
	case 1:
		r.fromPod = parts[0]
	case 2:
		r.fromNS, r.fromPod = parts[0], parts[1]
		if msgs := validation.IsDNS1123Label(r.fromNS); len(msgs) > 0 {
			return nil, clienv.Usagef("--from %q: namespace %q is not valid: %s", from, r.fromNS, strings.Join(msgs, "; "))
		}
	default:
		return nil, clienv.Usagef("--from %q: expected POD or NAMESPACE/POD", from)
	}
	if msgs := validation.IsDNS1123Subdomain(r.fromPod); len(msgs) > 0 {
		return nil, clienv.Usagef("--from %q: %q is not a pod name: %s", from, r.fromPod, strings.Join(msgs, "; "))
	}

	host := to
	if i := strings.LastIndex(to, ":"); i >= 0 {
		host, r.toPort = to[:i], to[i+1:]
		if r.toPort == "" {
			return nil, clienv.Usagef("--to %q: the port after ':' is empty; expected %s", to, toForm)
		}
		if n, err := strconv.Atoi(r.toPort); err == nil {
			if n < 1 || n > 65535 {
				return nil, clienv.Usagef("--to %q: port %d is not between 1 and 65535", to, n)
			}
		} else if msgs := validation.IsValidPortName(r.toPort); len(msgs) > 0 {
			return nil, clienv.Usagef("--to %q: %q is neither a port number nor a port name: %s", to, r.toPort, strings.Join(msgs, "; "))
		}
	}
	switch {
	case strings.Contains(host, "/"):
		p := strings.Split(host, "/")
		if len(p) != 2 {
			return nil, clienv.Usagef("--to %q: expected %s", to, toForm)
		}
		r.toNS, r.toSvc = p[0], p[1]
	case strings.Contains(host, "."):
		p := strings.Split(host, ".")
		r.toSvc, r.toNS = p[0], p[1]
	default:
		r.toSvc = host
	}
	if msgs := validation.IsDNS1035Label(r.toSvc); len(msgs) > 0 {
		return nil, clienv.Usagef("--to %q: %q is not a Service name: %s; expected %s", to, r.toSvc, strings.Join(msgs, "; "), toForm)
	}
	if host != r.toSvc {
		if msgs := validation.IsDNS1123Label(r.toNS); len(msgs) > 0 {
			return nil, clienv.Usagef("--to %q: namespace %q is not valid: %s; expected %s", to, r.toNS, strings.Join(msgs, "; "), toForm)
		}
	}

	if err := match.CheckMethod(method); err != nil || method == "*" {
		why := "* is a wildcard of route rules, not a method"
		if err != nil {
			why = err.Error()
		}
		return nil, clienv.Usagef("--method %q: %s; give the method the client sends, e.g. --method GET", method, why)
	}
	if !strings.HasPrefix(path, "/") {
		return nil, clienv.Usagef("--path %q: must start with /, e.g. --path /api/items", path)
	}
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		r.path, r.query = path[:i], true
	}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, clienv.Usagef("--header %q: expected NAME=VALUE, e.g. --header x-canary=true", h)
		}
		if !validHeaderName(name) {
			return nil, clienv.Usagef("--header %q: %q is not a valid HTTP header name (letters, digits and !#$%%&'*+-.^_`|~ only)", h, name)
		}
		r.header.Add(textproto.CanonicalMIMEHeaderKey(name), value)
	}
	for _, f := range []string{"method", "path", "header"} {
		if changed(f) {
			r.httpFlags = append(r.httpFlags, "--"+f)
		}
	}
	return r, nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}
