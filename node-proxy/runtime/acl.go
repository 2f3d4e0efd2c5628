package runtime

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/smi/match"
)

// MaxReasonLen bounds deny reasons (they travel in a response header).
const MaxReasonLen = 512

// AllowHTTP decides whether src may send this request over r. With ACL off
// everything is allowed. The allow path does not allocate; a denial
// returns a short reason naming what was missing.
func (r *Route) AllowHTTP(src Source, method, path string, h http.Header) (bool, string) {
	if !r.ACL {
		return true, ""
	}
	if src.Known {
		for i := range r.Rules {
			rule := &r.Rules[i]
			if !rule.admits(src.Identity, r.Port.Port) {
				continue
			}
			if len(rule.HTTP) == 0 {
				return true, ""
			}
			if _, ok := match.AnyHTTP(rule.HTTP, method, path, h); ok {
				return true, ""
			}
		}
	}
	return false, r.denyReason(src, func(b *strings.Builder) {
		b.WriteString(method)
		b.WriteByte(' ')
		b.WriteString(path)
	}, true)
}

// AllowL4 decides whether src may open a TCP connection or UDP flow on r.
func (r *Route) AllowL4(src Source) (bool, string) {
	if !r.ACL {
		return true, ""
	}
	if src.Known {
		for i := range r.Rules {
			if r.Rules[i].admits(src.Identity, r.Port.Port) {
				return true, ""
			}
		}
	}
	return false, r.denyReason(src, func(b *strings.Builder) {
		b.WriteString(string(r.Port.Protocol))
	}, false)
}

func (rule *Rule) admits(id Identity, port int32) bool {
	if !match.Ports(rule.Ports, port) {
		return false
	}
	for _, s := range rule.Sources {
		if s == id {
			return true
		}
	}
	return false
}

// denyReason explains a denial: who asked, for what, and which rules came
// closest (those naming the source but not matching the request), or that
// no rule names the source at all.
func (r *Route) denyReason(src Source, what func(*strings.Builder), isHTTP bool) string {
	var b strings.Builder
	dest := r.Service.Key + ":" + strconv.Itoa(int(r.Port.Port))
	if !src.Known {
		b.WriteString("source is not a pod on this node, so it has no identity; access to ")
		b.WriteString(dest)
		b.WriteString(" needs a TrafficTarget naming the client's ServiceAccount")
		return b.String()
	}
	var near []string
	for i := range r.Rules {
		rule := &r.Rules[i]
		for _, s := range rule.Sources {
			if s == src.Identity {
				near = append(near, rule.Source)
				break
			}
		}
	}
	b.WriteString("no access rule allows ")
	b.WriteString(src.Identity.String())
	b.WriteString(" to ")
	what(&b)
	b.WriteString(" on ")
	b.WriteString(dest)
	if len(near) == 0 {
		b.WriteString("; no TrafficTarget for this destination lists that ServiceAccount")
	} else {
		if isHTTP {
			b.WriteString("; the request matches no route or port of: ")
		} else {
			b.WriteString("; the port is not in: ")
		}
		b.WriteString(strings.Join(near, ", "))
	}
	s := b.String()
	if len(s) > MaxReasonLen {
		s = s[:MaxReasonLen-3] + "..."
	}
	return s
}
