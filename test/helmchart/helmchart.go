// Package helmchart is the one place Go code renders charts/petfabric: the chart tests
// (test/chart), the e2e suites and the install tests all render through it, with the pinned
// helm, the same release name and namespace, the pinned Kubernetes version and the API
// versions the chart's optional objects need (cert-manager, Prometheus operator).
package helmchart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/petfabric/petfabric/internal/testenv"
)

// The release the tests render and install.
const (
	Release   = "petfabric"
	Namespace = "petfabric-system"
)

// APIVersions are the API groups beyond the built-in ones that Template tells helm the cluster
// serves: the chart renders its cert-manager objects and its ServiceMonitor only where the
// cluster serves them.
var APIVersions = []string{"cert-manager.io/v1", "monitoring.coreos.com/v1"}

// Root is the repository's root directory, found from this source file.
func Root() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ChartDir is the chart's directory.
func ChartDir() string { return filepath.Join(Root(), "charts", "petfabric") }

// versions reads hack/versions.env, the single source of the pinned versions. It is read here
// rather than through test/cluster so that rendering the chart needs no control-plane code.
func versions() (map[string]string, error) {
	path := filepath.Join(Root(), "hack", "versions.env")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read pinned versions: %w", err)
	}
	defer f.Close()
	v := map[string]string{}
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
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return v, nil
}

// pinned returns the pinned version of key, failing the test without it.
func pinned(t testing.TB, key string) string {
	t.Helper()
	v, err := versions()
	require.NoError(t, err)
	require.NotEmpty(t, v[key], "hack/versions.env has no %s", key)
	return v[key]
}

// Helm returns the pinned helm binary (where hack/build-tools.sh puts it, or the directory in
// PETFABRIC_HELM_BIN), or fails (make test) / skips (by hand) without it.
func Helm(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("PETFABRIC_HELM_BIN")
	if dir == "" {
		cache := os.Getenv("PETFABRIC_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			require.NoError(t, err, "locate the binary cache")
			cache = filepath.Join(home, ".cache", "petfabric")
		}
		dir = filepath.Join(cache, "bin", "helm-"+pinned(t, "HELM_VERSION"))
	}
	bin := filepath.Join(dir, "helm")
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, "pinned helm ("+bin+")")
	}
	return bin
}

// KubeVersion is the pinned Kubernetes version (e.g. v1.36.3): helm template assumes an old
// version otherwise, which the chart's kubeVersion refuses.
func KubeVersion(t testing.TB) string {
	t.Helper()
	return pinned(t, "K8S_VERSION")
}

// Run runs helm with args, plus --values of a file holding valuesYAML when it is not empty,
// and returns stdout. The error carries the command line and helm's stderr.
func Run(t testing.TB, valuesYAML string, args ...string) (string, error) {
	t.Helper()
	if valuesYAML != "" {
		// Not t.TempDir: helm splits --values at commas, which subtest names put in its path.
		dir, err := os.MkdirTemp("", "helmchart-values-")
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		f := filepath.Join(dir, "values.yaml")
		require.NoError(t, os.WriteFile(f, []byte(valuesYAML), 0o600))
		args = append(args, "--values", f)
	}
	cmd := exec.Command(Helm(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// TemplateArgs are the arguments of `helm template` for the test release: release name,
// chart, namespace, Kubernetes version and APIVersions.
func TemplateArgs(t testing.TB) []string {
	t.Helper()
	args := []string{"template", Release, ChartDir(), "--namespace", Namespace, "--kube-version", KubeVersion(t)}
	for _, v := range APIVersions {
		args = append(args, "--api-versions", v)
	}
	return args
}

// Template renders the chart with valuesYAML (may be empty) and extra helm arguments (e.g.
// "--values" with a file of charts/petfabric/ci, or "--set", "k=v"), returning the manifests.
func Template(t testing.TB, valuesYAML string, args ...string) (string, error) {
	t.Helper()
	return Run(t, valuesYAML, append(TemplateArgs(t), args...)...)
}

// Render is Template that fails the test on an error.
func Render(t testing.TB, valuesYAML string, args ...string) string {
	t.Helper()
	out, err := Template(t, valuesYAML, args...)
	require.NoError(t, err, "render charts/petfabric")
	return out
}

// Lint runs `helm lint --strict` on the chart with valuesYAML and extra arguments.
func Lint(t testing.TB, valuesYAML string, args ...string) (string, error) {
	t.Helper()
	base := []string{"lint", "--strict", ChartDir(), "--namespace", Namespace, "--kube-version", KubeVersion(t)}
	return Run(t, valuesYAML, append(base, args...)...)
}

// Objects decodes rendered manifests into objects, skipping empty documents; a document that
// does not decode fails the test.
func Objects(t testing.TB, manifests string) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err, "decode rendered manifests")
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// Find returns the object of kind and name, or nil.
func Find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// OfKind returns the objects of kind, in rendering order.
func OfKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// Decode converts obj into a typed object (a pointer, e.g. *appsv1.Deployment). A field the
// type does not know is an error, so a misspelt field in a template is caught here.
func Decode(obj *unstructured.Unstructured, into any) error {
	if obj == nil {
		return errors.New("decode: no object (not rendered?)")
	}
	if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, into, true); err != nil {
		return fmt.Errorf("decode %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return nil
}
