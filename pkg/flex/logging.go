package flex

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"k8s.io/klog/v2"
)

// OpenLog opens the driver's JSON log (a RotatingWriter on cfg.LogFile) and routes klog, which
// k8s.io/mount-utils logs through, into it: nothing may reach stdout or stderr, which kubelet
// parses as the reply. When the file cannot be opened the logs are discarded, never printed.
func OpenLog(cfg *NodeConfig, verb string) (*slog.Logger, io.Closer) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel)))
	var w io.Writer = io.Discard
	var closer io.Closer = io.NopCloser(nil)
	if rw, err := OpenRotating(cfg.LogFile, cfg.LogMaxBytes, cfg.LogBackups); err == nil {
		w, closer = rw, rw
	}
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).
		With("driver", DriverName, "verb", verb, "pid", os.Getpid())
	klog.SetSlogLogger(log.With("component", "klog"))
	return log, closer
}
