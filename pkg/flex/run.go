package flex

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MainOptions tune Main for the real binary and for tests.
type MainOptions struct {
	// RedirectStdio points file descriptors 1 and 2 at the log file for the rest of the process
	// and writes the reply to a duplicate of the original stdout, so that nothing but the reply
	// (no library print, no runtime panic trace) reaches kubelet. Only for the real binary.
	RedirectStdio bool
	// NewDriver replaces the production wiring (tests).
	NewDriver func(cfg *NodeConfig, log *slog.Logger) (*Driver, error)
}

// Main runs one FlexVolume call — verb and the arguments after it, as kubelet passes them — and
// writes exactly one JSON reply to stdout. It returns the process exit code.
func Main(verb string, args []string, stdout io.Writer, opts MainOptions) int {
	start := time.Now()
	cfg, cfgErr := LoadConfig()
	if cfg == nil {
		cfg = &NodeConfig{}
		_ = cfg.complete() // defaults only, for the log location
	}
	log, closer := OpenLog(cfg, verb)
	defer closer.Close()
	if opts.RedirectStdio {
		if out, err := redirectStdio(cfg.LogFile); err == nil {
			stdout = out
		} else {
			log.Warn("cannot redirect stdout/stderr to the log file", "error", err)
		}
	}
	log.Info("call", "args", describeArgs(verb, args))
	if cfgErr != nil {
		log.Error("bad node config", "error", cfgErr)
	}
	reply := dispatch(verb, args, cfg, cfgErr, log, opts)
	log.Info("reply", "status", reply.Status, "message", reply.Message, "duration", time.Since(start))
	if err := reply.Write(stdout); err != nil {
		log.Error("writing the reply failed", "error", err)
		return 1
	}
	return reply.ExitCode()
}

func dispatch(verb string, args []string, cfg *NodeConfig, cfgErr error, log *slog.Logger, opts MainOptions) (reply Reply) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			reply = failure(fmt.Errorf("internal error in the datera/iscsi driver (%v); see the driver log", p))
		}
	}()
	switch verb {
	case VerbInit:
		// Never fails: a failing init makes kubelet skip the driver entirely; config problems
		// surface as clear mount failures instead.
		caps := DriverCapabilities
		return Reply{Status: StatusSuccess, Capabilities: &caps}
	case VerbMount, VerbUnmount:
	default:
		return notSupported(verb)
	}
	want := map[string]int{VerbMount: 2, VerbUnmount: 1}[verb]
	if len(args) != want {
		return failure(fmt.Errorf("%s takes %d arguments, got %d (usage: %s)", verb, want, len(args),
			map[string]string{VerbMount: "mount <mount dir> <json options>", VerbUnmount: "unmount <mount dir>"}[verb]))
	}
	if cfgErr != nil {
		return failure(fmt.Errorf("node configuration: %w", cfgErr))
	}
	newDriver := opts.NewDriver
	if newDriver == nil {
		newDriver = NewDriver
	}
	if verb == VerbMount {
		req, err := ParseMountRequest(args[0], args[1], cfg.DefaultFSType)
		if err != nil {
			return failure(err)
		}
		d, err := newDriver(cfg, log)
		if err != nil {
			return failure(err)
		}
		d.Crash = crashHookFromEnv()
		ctx, cancel := context.WithTimeout(context.Background(), cfg.MountTimeout.or(5*time.Minute))
		defer cancel()
		if err := d.Mount(ctx, req); err != nil {
			return failure(fmt.Errorf("mount of volume %s failed: %w", req.VolumeID, err))
		}
		return success("")
	}
	d, err := newDriver(cfg, log)
	if err != nil {
		return failure(err)
	}
	d.Crash = crashHookFromEnv()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.UnmountTimeout.or(3*time.Minute))
	defer cancel()
	if err := d.Unmount(ctx, args[0]); err != nil {
		return failure(fmt.Errorf("unmount of %s failed: %w", args[0], err))
	}
	return success("")
}

// describeArgs is the call for the log, with secret values replaced.
func describeArgs(verb string, args []string) []string {
	out := append([]string(nil), args...)
	if verb == VerbMount && len(out) == 2 {
		var opts map[string]any
		if err := json.Unmarshal([]byte(out[1]), &opts); err != nil {
			out[1] = fmt.Sprintf("(unparsable options, %d bytes)", len(out[1]))
		} else {
			for k := range opts {
				if strings.HasPrefix(k, KeySecretPrefix) {
					opts[k] = "(redacted)"
				}
			}
			b, _ := json.Marshal(opts)
			out[1] = string(b)
		}
	}
	return out
}

// redirectStdio makes fds 1 and 2 point at the log file and returns a file on the original
// stdout for the reply.
func redirectStdio(logFile string) (*os.File, error) {
	fd, err := unix.Dup(1)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		f, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	defer f.Close()
	for _, target := range []int{1, 2} {
		if err := unix.Dup3(int(f.Fd()), target, 0); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	return os.NewFile(uintptr(fd), "flexvolume-reply"), nil
}
