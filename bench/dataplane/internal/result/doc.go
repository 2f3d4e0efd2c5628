// Package result is the record the load generator hands the benchmark
// harness: one measurement of one target, as JSON on the loadgen's stdout.
//
// Stage: shared data of bench/dataplane (loadgen writes, harness reads).
// Imports: the standard library only.
package result
