// Package balance picks a destination pod: power-of-two-choices over least
// outstanding requests, ready endpoints before not-ready ones, optional
// same-zone preference, and passive outlier ejection with an interval that
// doubles on each ejection. Per-endpoint health (State) outlives a config
// reload so a reload does not forget which pods are failing. Weighted
// TrafficSplit choice lives here too.
//
// Stage: leaf of the data path (used by runtime). Picking never allocates.
// Imports: the standard library only.
package balance
