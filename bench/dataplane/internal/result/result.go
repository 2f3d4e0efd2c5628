package result

import (
	"math"
	"slices"
)

// Run is one measurement: a closed loop (QPS 0, as fast as the target
// answers) or an open loop at a fixed rate.
type Run struct {
	URL          string        `json:"url"`
	Connections  int           `json:"connections"`
	RequestedQPS float64       `json:"requestedQPS"` // 0: closed loop
	ActualQPS    float64       `json:"actualQPS"`
	Seconds      float64       `json:"seconds"`
	Requests     int64         `json:"requests"`
	Errors       int64         `json:"errors"` // non-2xx answers and socket errors
	Codes        map[int]int64 `json:"codes"`  // -1: socket error
	Latency      Percentiles   `json:"latency"`
	ServiceTime  Percentiles   `json:"serviceTime"` // from the actual send, as fortio measures it
	CPUSeconds   float64       `json:"cpuSeconds"`  // the load generator's own CPU
}

// Percentiles of a latency distribution, in seconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Compute returns exact percentiles (nearest rank) of samples, sorting them.
func Compute(samples []float64) Percentiles {
	if len(samples) == 0 {
		return Percentiles{}
	}
	slices.Sort(samples)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(samples)))) - 1
		return samples[min(max(i, 0), len(samples)-1)]
	}
	sum := 0.0
	for _, s := range samples {
		sum += s
	}
	return Percentiles{P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999),
		Max: samples[len(samples)-1], Mean: sum / float64(len(samples))}
}
