package smi

import (
	"time"

	"github.com/trellis-mesh/trellis/smi/match"
)

// Ref names one object.
type Ref struct {
	Kind      Kind   `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String is `Kind namespace/name`.
func (r Ref) String() string { return string(r.Kind) + " " + r.Namespace + "/" + r.Name }

// NamespacedName is `namespace/name`.
func (r Ref) NamespacedName() string { return r.Namespace + "/" + r.Name }

// Less orders refs by kind, namespace, name.
func (r Ref) Less(o Ref) bool {
	if r.Kind != o.Kind {
		return r.Kind < o.Kind
	}
	if r.Namespace != o.Namespace {
		return r.Namespace < o.Namespace
	}
	return r.Name < o.Name
}

// Meta is what every decoded object carries.
type Meta struct {
	Ref
	// APIVersion is the group/version the object was read in.
	APIVersion string    `json:"apiVersion"`
	UID        string    `json:"uid,omitempty"`
	Generation int64     `json:"generation,omitempty"`
	Created    time.Time `json:"created,omitzero"`
	// Invalid is set when decoding found an Error: the object is disabled.
	Invalid bool `json:"invalid,omitempty"`
}

// Object is one decoded SMI object: *TrafficSplit, *TrafficTarget,
// *HTTPRouteGroup, *TCPRoute or *UDPRoute.
type Object interface {
	GetMeta() *Meta
}

// GetMeta implements Object.
func (m *Meta) GetMeta() *Meta { return m }

// TrafficSplit is every TrafficSplit version in one form.
type TrafficSplit struct {
	Meta
	// Service is the root Service, in the split's namespace.
	Service string `json:"service"`
	// Backends in the order written. Weights are relative integers; see
	// Backend.Weight for how v1alpha1 quantities are converted.
	Backends []Backend `json:"backends"`
	// Matches names HTTPRouteGroups (v1alpha3+) whose matches select the
	// requests the split applies to. Empty means every request.
	Matches []string `json:"matches,omitempty"`
}

// Backend is one weighted backend Service.
type Backend struct {
	Service string `json:"service"`
	// Weight is relative. For v1alpha1, whose weights are quantities, all
	// weights of the split are whole numbers when every quantity is; when
	// any is fractional (e.g. 500m) every weight is in thousandths.
	Weight int64 `json:"weight"`
}

// Identity is a workload identity: a ServiceAccount.
type Identity struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String is `namespace/name`.
func (i Identity) String() string { return i.Namespace + "/" + i.Name }

// TrafficTarget is every TrafficTarget version in one form.
type TrafficTarget struct {
	Meta
	// Destination is the ServiceAccount whose pods the rules protect. Its
	// namespace is always the TrafficTarget's own.
	Destination Identity `json:"destination"`
	// Port restricts access to one destination pod port (v1alpha1 and
	// v1alpha2 `destination.port`); 0 means every port.
	Port int32 `json:"port,omitempty"`
	// Sources may reach the destination through the rules.
	Sources []Identity `json:"sources"`
	Rules   []Rule     `json:"rules"`
}

// Rule references a traffic spec and optionally some of its matches.
type Rule struct {
	Kind Kind   `json:"kind"`
	Name string `json:"name"`
	// Matches names matches of the referenced spec; nil means all of them.
	Matches []string `json:"matches,omitempty"`
}

// HTTPRouteGroup is every HTTPRouteGroup version in one form.
type HTTPRouteGroup struct {
	Meta
	Matches []match.HTTPSpec `json:"matches"`
}

// PortMatch is the single match of a TCPRoute or UDPRoute.
type PortMatch struct {
	Name string `json:"name,omitempty"`
	// Ports lists destination pod ports; empty selects all ports.
	Ports []int32 `json:"ports,omitempty"`
}

// TCPRoute is every TCPRoute version in one form. Before v1alpha4 a TCPRoute
// has no fields and selects every port.
type TCPRoute struct {
	Meta
	Match PortMatch `json:"match"`
}

// UDPRoute (v1alpha4 only).
type UDPRoute struct {
	Meta
	Match PortMatch `json:"match"`
}
