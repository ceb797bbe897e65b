package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/petfabric/petfabric/internal/testenv"
)

// Binaries are the paths of the pinned programs the harness runs.
type Binaries struct {
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kubectl               string
	Etcd                  string
	Kwok                  string
	// Kubelet and FakeCRI (hack/k8s/fakecri) run real kubelet nodes (KubeletSpec).
	Kubelet    string
	FakeCRI    string
	KwokStages []string // kwok stage files: node and pod lifecycles
	Helm       string
}

// Versions are the pinned tool versions, read from hack/versions.env.
type Versions map[string]string

// repoRoot is found from this source file's location, so tests in any package work.
func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// LoadVersions reads hack/versions.env, the single source of the pinned versions.
func LoadVersions() (Versions, error) {
	path := filepath.Join(repoRoot(), "hack", "versions.env")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read pinned versions: %w", err)
	}
	defer f.Close()
	v := Versions{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: malformed line %q", path, line)
		}
		v[k] = val
	}
	return v, s.Err()
}

// cacheDir is where hack/build-tools.sh puts the binaries.
func cacheDir() string {
	if d := os.Getenv("PETFABRIC_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "petfabric")
}

// DefaultBinaries locates the pinned binaries built by hack/build-tools.sh. Each directory may
// be overridden with PETFABRIC_{K8S,ETCD,KWOK,HELM}_BIN.
func DefaultBinaries() (Binaries, error) {
	v, err := LoadVersions()
	if err != nil {
		return Binaries{}, err
	}
	bin := filepath.Join(cacheDir(), "bin")
	dir := func(env, tool, version string) string {
		if d := os.Getenv(env); d != "" {
			return d
		}
		return filepath.Join(bin, tool+"-"+version)
	}
	k8s := dir("PETFABRIC_K8S_BIN", "k8s", v["K8S_VERSION"])
	kwok := dir("PETFABRIC_KWOK_BIN", "kwok", v["KWOK_VERSION"])
	b := Binaries{
		KubeAPIServer:         filepath.Join(k8s, "kube-apiserver"),
		KubeControllerManager: filepath.Join(k8s, "kube-controller-manager"),
		KubeScheduler:         filepath.Join(k8s, "kube-scheduler"),
		Kubectl:               filepath.Join(k8s, "kubectl"),
		Kubelet:               filepath.Join(k8s, "kubelet"),
		FakeCRI:               filepath.Join(k8s, "fakecri"),
		Etcd:                  filepath.Join(dir("PETFABRIC_ETCD_BIN", "etcd", v["ETCD_VERSION"]), "etcd"),
		Kwok:                  filepath.Join(kwok, "kwok"),
		Helm:                  filepath.Join(dir("PETFABRIC_HELM_BIN", "helm", v["HELM_VERSION"]), "helm"),
	}
	for _, s := range []string{"node-fast-node-initialize.yaml", "node-heartbeat-with-lease-node-heartbeat-with-lease.yaml",
		"pod-fast-pod-ready.yaml", "pod-fast-pod-complete.yaml", "pod-fast-pod-delete.yaml"} {
		b.KwokStages = append(b.KwokStages, filepath.Join(kwok, "stages", s))
	}
	return b, nil
}

// check reports the first binary or stage file that does not exist, naming the component.
func (b Binaries) check() error {
	files := []struct{ name, path string }{
		{"etcd", b.Etcd}, {"kube-apiserver", b.KubeAPIServer},
		{"kube-controller-manager", b.KubeControllerManager}, {"kube-scheduler", b.KubeScheduler},
		{"kubectl", b.Kubectl}, {"kwok", b.Kwok},
	}
	for _, s := range b.KwokStages {
		files = append(files, struct{ name, path string }{"kwok stage", s})
	}
	for _, f := range files {
		st, err := os.Stat(f.path)
		if err != nil {
			return fmt.Errorf("%s: %s not found: %w (build the pinned tools with `make tools`)", f.name, f.path, err)
		}
		if f.name != "kwok stage" && st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s: %s is not executable", f.name, f.path)
		}
	}
	return nil
}

// checkKubelet reports a missing kubelet or fake CRI runtime binary.
func (b Binaries) checkKubelet() error {
	for _, f := range []struct{ name, path string }{{"kubelet", b.Kubelet}, {"fakecri", b.FakeCRI}} {
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %s not found: %w (build the pinned tools with `make tools`)", f.name, f.path, err)
		}
	}
	return nil
}

// RequireKubelet skips the test (by hand) or fails it (PETFABRIC_STRICT=1) unless the pinned
// control-plane binaries, kubelet and the fake CRI runtime are built and the test runs as root
// (kubelet mounts pod volumes on this host).
func RequireKubelet(t testing.TB) {
	t.Helper()
	RequireBinaries(t)
	b, err := DefaultBinaries()
	if err != nil {
		t.Fatalf("locate pinned binaries: %v", err)
	}
	if err := b.checkKubelet(); err != nil {
		testenv.Missing(t, "pinned kubelet binaries ("+err.Error()+")")
	}
	testenv.Root(t)
}

// RequireBinaries skips the test (by hand) or fails it (under make test, PETFABRIC_STRICT=1)
// when the pinned control-plane binaries have not been built.
func RequireBinaries(t testing.TB) {
	t.Helper()
	b, err := DefaultBinaries()
	if err != nil {
		t.Fatalf("locate pinned binaries: %v", err)
	}
	if _, err := os.Stat(b.KubeAPIServer); err != nil {
		testenv.Missing(t, "pinned control-plane binaries ("+b.KubeAPIServer+")")
	}
}
