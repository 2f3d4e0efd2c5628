package telemetry

import (
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Sampling configures access-log sampling: per second and per message,
// the first First entries are logged, then every Thereafter-th.
// First 0 logs everything.
type Sampling struct {
	First, Thereafter int
}

// NewAccessLogger returns a JSON access logger writing to w, sampled.
func NewAccessLogger(w zapcore.WriteSyncer, s Sampling) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), w, zap.InfoLevel)
	if s.First > 0 {
		th := s.Thereafter
		if th <= 0 {
			th = 1 << 30
		}
		core = zapcore.NewSamplerWithOptions(core, time.Second, s.First, th)
	}
	return zap.New(core).Named("access")
}
