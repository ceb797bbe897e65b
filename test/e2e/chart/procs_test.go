package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/petfabric/petfabric/test/helmchart"
)

// buildBinary builds the main package pkg (e.g. "./cmd/webhook") into a temporary directory.
func buildBinary(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = helmchart.Root()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build %s: %s", pkg, out)
	return bin
}

// program is a built binary running as a process, its output in logPath.
type program struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// startProgram runs bin with args (and extra environment) with its output in dir/name.log;
// the log is shown when the test fails, and the process is killed when the test ends.
func startProgram(t *testing.T, dir, name, bin string, args, env []string) *program {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	fmt.Fprintf(logFile, "+ %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start(), "start %s", name)
	p := &program{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("=== %s log (%s):\n%s", name, logPath, fixtures.Tail(p.log(), 60))
		}
	})
	return p
}

// log is the program's output so far.
func (p *program) log() string {
	data, _ := os.ReadFile(p.logPath)
	return string(data)
}

// waitHTTP200 polls url until it answers 200, failing early when p exits.
func waitHTTP200(t *testing.T, p *program, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before %s answered 200:\n%s", p.name, url, fixtures.Tail(p.log(), 40))
		default:
		}
		resp, err := http.Get(url) //nolint:noctx // short-lived local probe
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s never answered 200 (last: %v)\n%s", p.name, url, err, fixtures.Tail(p.log(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// container is the named container of a rendered workload (Deployment or DaemonSet), with
// the mount path of each volume.
func container(t *testing.T, obj *unstructured.Unstructured, name string, init bool) (corev1.Container, []corev1.Volume) {
	t.Helper()
	require.NotNil(t, obj, "workload not rendered")
	var spec corev1.PodTemplateSpec
	tpl, found, err := unstructured.NestedMap(obj.Object, "spec", "template")
	require.NoError(t, err)
	require.True(t, found, "%s %s has no pod template", obj.GetKind(), obj.GetName())
	require.NoError(t, helmchart.Decode(&unstructured.Unstructured{Object: tpl}, &spec))
	list := spec.Spec.Containers
	if init {
		list = spec.Spec.InitContainers
	}
	for _, c := range list {
		if c.Name == name {
			return c, spec.Spec.Volumes
		}
	}
	t.Fatalf("%s %s has no container %s", obj.GetKind(), obj.GetName(), name)
	return corev1.Container{}, nil
}

// mountPath is where c mounts volume.
func mountPath(t *testing.T, c corev1.Container, volume string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	t.Fatalf("container %s mounts no volume %s", c.Name, volume)
	return ""
}

// secretVolume is the name of the volume of the Secret secretName.
func secretVolume(t *testing.T, vols []corev1.Volume, secretName string) string {
	t.Helper()
	for _, v := range vols {
		if v.Secret != nil && v.Secret.SecretName == secretName {
			return v.Name
		}
	}
	t.Fatalf("no volume of Secret %s", secretName)
	return ""
}

// projectSecret mirrors a Secret into dir the way kubelet projects a Secret volume: the keys'
// files live in a timestamped directory, ..data is a symlink to it swapped atomically by a
// rename, and each key is a symlink through ..data. It polls every interval until ctx ends;
// wrote receives the resourceVersion of each projection.
func projectSecret(ctx context.Context, cs kubernetes.Interface, ns, name, dir string, interval time.Duration, wrote func(rv string)) error {
	last := ""
	for {
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			// Not there yet (first issuance) or a transient error: keep what is projected.
		case s.ResourceVersion != last:
			if err := projectOnce(dir, s.Data); err != nil {
				return err
			}
			last = s.ResourceVersion
			if wrote != nil {
				wrote(last)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func projectOnce(dir string, data map[string][]byte) error {
	ts, err := os.MkdirTemp(dir, "..projected-")
	if err != nil {
		return fmt.Errorf("project secret: %w", err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(ts, k), v, 0o600); err != nil {
			return fmt.Errorf("project secret key %s: %w", k, err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return fmt.Errorf("project secret: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return fmt.Errorf("project secret: swap ..data: %w", err)
	}
	for k := range data {
		link := filepath.Join(dir, k)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
				return fmt.Errorf("project secret key %s: %w", k, err)
			}
		}
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// servedCert is the leaf certificate the TLS server at addr presents.
func servedCert(addr string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the served certificate only
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s presented no certificate", addr)
	}
	return certs[0], nil
}

// parseCert parses the first PEM certificate in data.
func parseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// nextCert parses the first PEM certificate of data and returns the rest.
func nextCert(data []byte) (*x509.Certificate, []byte, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, nil, errors.New("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	return c, rest, err
}

// ctrServiceAccount is the ServiceAccount a rendered workload's pods run as.
func ctrServiceAccount(t *testing.T, obj *unstructured.Unstructured) string {
	t.Helper()
	name, _, err := unstructured.NestedString(obj.Object, "spec", "template", "spec", "serviceAccountName")
	require.NoError(t, err)
	require.NotEmpty(t, name, "%s %s names no ServiceAccount", obj.GetKind(), obj.GetName())
	return name
}
