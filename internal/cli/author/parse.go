package author

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/match"
)

// checkServiceName checks a Service name as the apiserver would (an RFC
// 1035 label). what names where the name came from, for the message.
func checkServiceName(what, name string) error {
	if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
		return clienv.Usagef("%s: %q is not a valid Service name: %s", what, name, strings.Join(errs, "; "))
	}
	return nil
}

// parseBackends reads --to: SERVICE=WEIGHT pairs (comma-separated or
// repeated). Weights are whole numbers >= 0, at least one above 0, and
// unless relative is set they must add up to 100. root may appear as a
// backend (its share goes to its own endpoints) but not as the only one.
func parseBackends(values []string, root string, relative bool) ([]smi.Backend, error) {
	all := strings.Join(values, ",")
	if len(values) == 0 {
		return nil, clienv.Usagef("--to is required: name the backend Services and their weights, e.g. --to %s-v1=90,%s-v2=10", root, root)
	}
	var out []smi.Backend
	seen := map[string]bool{}
	var sum int64
	for _, v := range values {
		if strings.TrimSpace(v) == "" {
			return nil, clienv.Usagef("--to %q: an entry is empty; write SERVICE=WEIGHT pairs separated by commas, e.g. %s-v1=90,%s-v2=10", all, root, root)
		}
		name, w, ok := strings.Cut(v, "=")
		if !ok {
			return nil, clienv.Usagef("--to %q: expected SERVICE=WEIGHT, e.g. %s=90", v, v)
		}
		name = strings.TrimSpace(name)
		if strings.Contains(name, "/") {
			return nil, clienv.Usagef("--to %q: backends are Services in the split's own namespace; write the name alone, e.g. %s=%s", v, name[strings.LastIndex(name, "/")+1:], w)
		}
		if err := checkServiceName(fmt.Sprintf("--to %q", v), name); err != nil {
			return nil, err
		}
		w = strings.TrimSpace(w)
		weight, err := strconv.ParseInt(w, 10, 32)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return nil, clienv.Usagef("--to %q: weight %s is too large; weights are relative, so use smaller numbers with the same ratio", v, w)
			}
			return nil, clienv.Usagef("--to %q: weight %q is not a whole number; weights are non-negative integers such as 90 and 10", v, w)
		}
		if weight < 0 {
			return nil, clienv.Usagef("--to %q: weight %d is negative; use 0 to send a backend no traffic", v, weight)
		}
		if seen[name] {
			return nil, clienv.Usagef("--to %q: backend %q is listed twice; list each backend once", all, name)
		}
		seen[name] = true
		sum += weight
		out = append(out, smi.Backend{Service: name, Weight: weight})
	}
	if sum == 0 {
		return nil, clienv.Usagef("--to %q: every weight is 0, so the split would send nothing anywhere; give at least one backend a positive weight", all)
	}
	if len(out) == 1 && out[0].Service == root {
		return nil, clienv.Usagef("--to %q: the root Service %s is the split's only backend, so the split would change nothing; name the version Services, e.g. --to %s-v1=90,%s-v2=10", all, root, root, root)
	}
	if !relative && sum != 100 {
		return nil, clienv.Usagef("--to %q: the weights add up to %d, not 100; fix them, or pass --relative to use them as relative weights (each backend gets weight/sum)", all, sum)
	}
	return out, nil
}

// matchForms is what --match accepts, for messages.
const matchForms = "header:NAME=REGEX, header:NAME, path:REGEX or method:METHOD"

// parseMatches reads --match conditions into one HTTP match: conditions
// are ANDed (a request must meet every one), except that several methods
// form one list (any of them). Regular expressions are RE2, anchored at the
// start, as everywhere in SMI.
func parseMatches(values []string) (match.HTTPSpec, error) {
	var spec match.HTTPSpec
	for _, v := range values {
		kind, arg, ok := strings.Cut(v, ":")
		if !ok {
			return spec, clienv.Usagef("--match %q: expected %s", v, matchForms)
		}
		bad := func(err error) error {
			// The matcher's error starts with the field path inside the
			// match (pathRegex, headers[0].name, ...): drop it, the flag
			// already says which condition this is.
			msg := err.Error()
			if i := strings.Index(msg, ": "); i >= 0 {
				msg = msg[i+2:]
			}
			return clienv.Usagef("--match %q: %s", v, msg)
		}
		switch kind {
		case "path":
			if arg == "" {
				return spec, clienv.Usagef("--match %q: the path regular expression is empty; write e.g. path:/api/.*", v)
			}
			if spec.PathRegex != "" {
				return spec, clienv.Usagef("--match %q: a path is already given (%q); one match has one path expression (use | inside it for alternatives)", v, spec.PathRegex)
			}
			if err := match.CheckHTTP(match.HTTPSpec{PathRegex: arg}); err != nil {
				return spec, bad(err)
			}
			spec.PathRegex = arg
		case "method":
			for _, m := range strings.Split(arg, ",") {
				m = strings.TrimSpace(m)
				if m == "" {
					return spec, clienv.Usagef("--match %q: a method is empty; write e.g. method:GET or method:GET,HEAD", v)
				}
				if err := match.CheckMethod(m); err != nil {
					return spec, clienv.Usagef("--match %q: %q: %v", v, m, err)
				}
				if !contains(spec.Methods, m) {
					spec.Methods = append(spec.Methods, m)
				}
			}
		case "header":
			name, value, _ := strings.Cut(arg, "=")
			h := match.Header{Name: strings.TrimSpace(name), Value: value}
			if h.Name == "" {
				return spec, clienv.Usagef("--match %q: the header name is empty; write e.g. header:x-canary=true", v)
			}
			if err := match.CheckHTTP(match.HTTPSpec{Headers: []match.Header{h}}); err != nil {
				return spec, bad(err)
			}
			spec.Headers = append(spec.Headers, h)
		default:
			return spec, clienv.Usagef("--match %q: %q is not a condition kind; expected %s", v, kind, matchForms)
		}
	}
	return spec, nil
}

// describeMatch says in words which requests spec selects; "" means every
// HTTP request.
func describeMatch(spec match.HTTPSpec) string {
	var parts []string
	if len(spec.Methods) > 0 && !contains(spec.Methods, "*") {
		parts = append(parts, "method "+strings.Join(spec.Methods, " or "))
	}
	if spec.PathRegex != "" {
		parts = append(parts, fmt.Sprintf("path matching %q", spec.PathRegex))
	}
	for _, h := range spec.Headers {
		if h.Value == "" {
			parts = append(parts, fmt.Sprintf("header %s present", h.Name))
		} else {
			parts = append(parts, fmt.Sprintf("header %s matching %q", h.Name, h.Value))
		}
	}
	return strings.Join(parts, " and ")
}

// identityForm is the expected form of --from and --to, for messages.
const identityForm = "sa/NAMESPACE/NAME (a ServiceAccount), e.g. sa/shop/frontend"

// parseIdentity reads a ServiceAccount identity: sa/NAMESPACE/NAME (the
// prefix may also be serviceaccount/ or serviceaccounts/).
func parseIdentity(flag, v string) (smi.Identity, error) {
	parts := strings.Split(v, "/")
	if len(parts) != 3 {
		hint := ""
		if len(parts) == 2 && isSAPrefix(parts[0]) {
			hint = " (the namespace is missing)"
		} else if len(parts) == 2 {
			hint = " (the sa/ prefix is missing)"
		}
		return smi.Identity{}, clienv.Usagef("%s %q: expected %s%s", flag, v, identityForm, hint)
	}
	if !isSAPrefix(parts[0]) {
		return smi.Identity{}, clienv.Usagef("%s %q: %q is not an identity kind; SMI identities are ServiceAccounts, written %s", flag, v, parts[0], identityForm)
	}
	id := smi.Identity{Namespace: parts[1], Name: parts[2]}
	if id.Namespace == "" || id.Name == "" {
		return smi.Identity{}, clienv.Usagef("%s %q: expected %s (a part is empty)", flag, v, identityForm)
	}
	if errs := validation.IsDNS1123Label(id.Namespace); len(errs) > 0 {
		return smi.Identity{}, clienv.Usagef("%s %q: namespace %q is not valid: %s; expected %s", flag, v, id.Namespace, strings.Join(errs, "; "), identityForm)
	}
	if errs := validation.IsDNS1123Subdomain(id.Name); len(errs) > 0 {
		return smi.Identity{}, clienv.Usagef("%s %q: ServiceAccount name %q is not valid: %s; expected %s", flag, v, id.Name, strings.Join(errs, "; "), identityForm)
	}
	return id, nil
}

func isSAPrefix(s string) bool {
	return s == "sa" || s == "serviceaccount" || s == "serviceaccounts"
}

// parsePorts reads --ports: destination pod ports, 1-65535, each once.
func parsePorts(values []string) ([]int32, error) {
	var out []int32
	for _, v := range values {
		v = strings.TrimSpace(v)
		p, err := strconv.ParseInt(v, 10, 32)
		if err != nil || p < 1 || p > 65535 {
			return nil, clienv.Usagef("--ports %q: not a port number; use whole numbers between 1 and 65535, e.g. --ports 5432 or --ports 8080,8443", v)
		}
		for _, q := range out {
			if q == int32(p) {
				return nil, clienv.Usagef("--ports %q: port %d is listed twice; list each port once", strings.Join(values, ","), p)
			}
		}
		out = append(out, int32(p))
	}
	return out, nil
}

// parseMethods reads --methods: HTTP methods (case-sensitive) or *.
func parseMethods(values []string) ([]string, error) {
	var out []string
	for _, v := range values {
		m := strings.TrimSpace(v)
		if m == "" {
			return nil, clienv.Usagef("--methods %q: a method is empty; write e.g. --methods GET,POST", strings.Join(values, ","))
		}
		if err := match.CheckMethod(m); err != nil {
			return nil, clienv.Usagef("--methods %q: %v", m, err)
		}
		if contains(out, m) {
			return nil, clienv.Usagef("--methods %q: %s is listed twice; list each method once", strings.Join(values, ","), m)
		}
		out = append(out, m)
	}
	return out, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
