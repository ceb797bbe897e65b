package serving

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// AddFlags declares the scaffold's flags on fs, with c's current values as defaults; both
// programs call it, so the flag names are the same in both binaries.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	if c.Timeouts == (Timeouts{}) {
		c.Timeouts = DefaultTimeouts
	}
	if c.CertReloadInterval == 0 {
		c.CertReloadInterval = DefaultCertReloadInterval
	}
	if c.CertFailureGrace == 0 {
		c.CertFailureGrace = DefaultCertFailureGrace
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	fs.StringVar(&c.Listen, "listen", c.Listen, "TLS address the callers use")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "plain HTTP address for /healthz, /readyz and /metrics")
	fs.StringVar(&c.CertFile, "tls-cert-file", c.CertFile, "serving certificate (PEM); reloaded when it changes")
	fs.StringVar(&c.KeyFile, "tls-key-file", c.KeyFile, "serving key (PEM); reloaded when it changes")
	fs.StringVar(&c.ClientCAFile, "client-ca-file", c.ClientCAFile, "when set, require client certificates signed by this CA bundle (reloaded when it changes)")
	fs.DurationVar(&c.CertReloadInterval, "cert-reload-interval", c.CertReloadInterval, "how often the TLS files are checked for changes")
	fs.DurationVar(&c.CertFailureGrace, "cert-failure-grace", c.CertFailureGrace, "how long changed TLS files may fail to load before /readyz fails (the previous certificate keeps serving meanwhile)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "bound of the graceful shutdown after SIGTERM")
	fs.DurationVar(&c.Timeouts.ReadHeader, "read-header-timeout", c.Timeouts.ReadHeader, "TLS listener: time to read a request's headers")
	fs.DurationVar(&c.Timeouts.Read, "read-timeout", c.Timeouts.Read, "TLS listener: time to read a whole request")
	fs.DurationVar(&c.Timeouts.Write, "write-timeout", c.Timeouts.Write, "TLS listener: time from the end of the headers to the end of the answer; keep it above the caller's timeout (30s)")
	fs.DurationVar(&c.Timeouts.Idle, "idle-timeout", c.Timeouts.Idle, "TLS listener: how long a kept-alive connection may wait for its next request")
}

// CheckFlags rejects flag values that cannot work, naming the flag.
func (c *Config) CheckFlags() error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--read-header-timeout", c.Timeouts.ReadHeader}, {"--read-timeout", c.Timeouts.Read},
		{"--write-timeout", c.Timeouts.Write}, {"--idle-timeout", c.Timeouts.Idle},
		{"--cert-reload-interval", c.CertReloadInterval}, {"--cert-failure-grace", c.CertFailureGrace},
		{"--shutdown-timeout", c.ShutdownTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s %s: must be positive", d.flag, d.v)
		}
	}
	return nil
}

// NewLogger is the programs' JSON logger on stderr at the --log-level.
func NewLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

type loggerKey struct{}

// WithLogger returns ctx carrying a request-scoped logger (one with the request's identity
// attached: admission UID, kind and object; the pod being scheduled).
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// LoggerFrom returns the request-scoped logger WithLogger stored, or fallback.
func LoggerFrom(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return fallback
}
