package serving

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/petfabric/petfabric/pkg/servingtls"
)

// The programs' check mode (--check; `flex agent --check`, `flex install --check`): parse the
// whole flag set, validate everything that needs no network — values in range, and the files
// the flags name exist and parse as the program would read them at start — then exit 0, or
// print the first problem and exit 2. The chart's rendering is run through it (test/chartflags),
// so a flag the chart passes and the binary does not accept fails a test, not a rollout.

// ExitCheckFailed is the exit status of a refused flag set: 2, as the flag package's own
// usage errors.
const ExitCheckFailed = 2

// FlagError is a flag set the program refuses: a flag parse error, or a problem the check mode
// found. main exits with ExitCheckFailed for it (ExitCode).
type FlagError struct{ Err error }

func (e *FlagError) Error() string { return e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// Refuse wraps err (nil stays nil) as a FlagError.
func Refuse(err error) error {
	if err == nil {
		return nil
	}
	return &FlagError{Err: err}
}

// ExitCode is the process exit status for a run's error: 0 for nil, ExitCheckFailed for a
// FlagError, 1 otherwise.
func ExitCode(err error) int {
	var fe *FlagError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &fe):
		return ExitCheckFailed
	default:
		return 1
	}
}

// CheckFiles loads the serving files as the server does at start: the TLS pair (parsed, not
// expired) and the client CA bundle when set. It also checks that both listen addresses are
// host:port.
func (c *Config) CheckFiles() error {
	for _, a := range []struct{ flag, addr string }{{"--listen", c.Listen}, {"--health-listen", c.HealthListen}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: %w", a.flag, a.addr, err)
		}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := servingtls.NewCertReloader(c.CertFile, c.KeyFile, c.ClientCAFile, quiet, nil); err != nil {
		return fmt.Errorf("--tls-cert-file/--tls-key-file/--client-ca-file: %w", err)
	}
	return nil
}

// CheckCAFile reads a PEM CA bundle as a program would (flag names the flag for the message);
// empty path is fine (the flag is unset).
func CheckCAFile(flag, path string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return fmt.Errorf("%s %s holds no PEM certificate", flag, path)
	}
	return nil
}

// CheckKubeconfig loads the --kubeconfig file when one is named, without contacting the
// apiserver. Empty means the in-cluster configuration, which exists only inside a pod: not
// checked.
func CheckKubeconfig(path string) error {
	if path == "" {
		return nil
	}
	if _, err := clientcmd.BuildConfigFromFlags("", path); err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", path, err)
	}
	return nil
}
