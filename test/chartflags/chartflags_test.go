// Package chartflags proves that every container command the chart renders is accepted by the
// binary it names. For each charts/petfabric/ci/*-values.yaml rendering (test/helmchart), every
// container and init container of every workload is run — petfabric's with the binaries the
// image holds (hack/image's Compile) in their check mode, the upstream kube-scheduler with the
// pinned binary up to its configuration dump — with the rendered command and arguments, the
// environment the kubelet would give it, and the files of its volumes written to a temporary
// directory standing in for the mount paths. A mutated rendering (an unknown flag, a bad value,
// a missing volume) is refused, so the test can fail.
package chartflags

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/petfabric/petfabric/hack/image/imagebuild"
	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

var (
	compileOnce sync.Once
	compiled    map[string]string
	compileErr  error
)

// binaries are the programs as the image holds them, compiled once per test binary.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	compileOnce.Do(func() {
		dir, err := os.MkdirTemp("", "chartflags-bin-")
		if err != nil {
			compileErr = err
			return
		}
		compiled, compileErr = imagebuild.Compile(imagebuild.Options{LDFlags: "-X github.com/petfabric/petfabric/pkg/version.Version=chartflags"}, dir)
	})
	require.NoError(t, compileErr)
	return compiled
}

// podContainer is one container of a rendered workload, with the pod around it.
type podContainer struct {
	Workload string // Kind/name
	Pod      corev1.PodSpec
	C        corev1.Container
}

func (p podContainer) String() string { return p.Workload + " container " + p.C.Name }

// containers lists every container and init container of every object with a pod template.
func containers(t *testing.T, objs []*unstructured.Unstructured) []podContainer {
	t.Helper()
	var out []podContainer
	for _, o := range objs {
		tmpl, found, err := unstructured.NestedMap(o.Object, "spec", "template")
		if !found {
			tmpl, found, err = unstructured.NestedMap(o.Object, "spec", "jobTemplate", "spec", "template")
		}
		require.NoError(t, err)
		if !found {
			continue
		}
		var pt corev1.PodTemplateSpec
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(tmpl, &pt, true), "%s %s pod template", o.GetKind(), o.GetName())
		for _, c := range append(append([]corev1.Container{}, pt.Spec.InitContainers...), pt.Spec.Containers...) {
			out = append(out, podContainer{Workload: o.GetKind() + "/" + o.GetName(), Pod: pt.Spec, C: c})
		}
	}
	return out
}

// sandbox is a container's file system stand-in: every volume mount is a directory under Root
// holding the volume's files.
type sandbox struct {
	Root   string
	mounts []string // mount paths, longest first
	Env    []string
	vars   map[string]string
	// configFiles are the files written from ConfigMaps: the paths they name inside mount
	// points are rewritten like the arguments (a scheduler configuration names the
	// extender's CA file, a backstores file its CHAP files).
	configFiles []string
}

// tlsFiles are what a cert-manager-issued Secret holds; Secrets the chart does not render
// (issued, or named as existing) get them, plus a placeholder for any other key a volume
// lists.
type tlsFiles struct{ crt, key, ca []byte }

var (
	pkiOnce sync.Once
	pki     tlsFiles
	pkiErr  error
)

func issued(t *testing.T) tlsFiles {
	t.Helper()
	pkiOnce.Do(func() {
		ca, err := testpki.NewCA("chartflags-ca")
		if err != nil {
			pkiErr = err
			return
		}
		pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")}, "petfabric-webhook."+helmchart.Namespace+".svc")
		if err != nil {
			pkiErr = err
			return
		}
		pki = tlsFiles{crt: pair.CertPEM, key: pair.KeyPEM, ca: ca.CertPEM}
	})
	require.NoError(t, pkiErr)
	return pki
}

// newSandbox writes the container's volumes and builds its environment.
func newSandbox(t *testing.T, objs []*unstructured.Unstructured, pc podContainer) *sandbox {
	t.Helper()
	s := &sandbox{Root: t.TempDir(), vars: map[string]string{}}
	vols := map[string]corev1.Volume{}
	for _, v := range pc.Pod.Volumes {
		vols[v.Name] = v
	}
	for _, m := range pc.C.VolumeMounts {
		require.Empty(t, m.SubPath, "%s: mount %s uses subPath", pc, m.Name)
		v, ok := vols[m.Name]
		require.True(t, ok, "%s mounts volume %s, which the pod does not have", pc, m.Name)
		dir := filepath.Join(s.Root, m.MountPath)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		s.fill(t, objs, pc, v.VolumeSource, dir)
		s.mounts = append(s.mounts, filepath.Clean(m.MountPath))
	}
	sort.Slice(s.mounts, func(i, j int) bool { return len(s.mounts[i]) > len(s.mounts[j]) })
	for _, f := range s.configFiles {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		text := string(b)
		for _, m := range s.mounts {
			text = rewriteIn(text, m, filepath.Join(s.Root, m))
		}
		require.NoError(t, os.WriteFile(f, []byte(text), 0o600))
	}
	for _, e := range pc.C.Env {
		val := e.Value
		if e.Value != "" {
			val = s.expand(e.Value)
		} else if f := e.ValueFrom; f != nil {
			switch {
			case f.FieldRef != nil:
				val = map[string]string{
					"metadata.namespace": helmchart.Namespace, "metadata.name": strings.ToLower(strings.ReplaceAll(pc.Workload, "/", "-")) + "-0",
					"spec.nodeName": "node-0", "spec.serviceAccountName": pc.Pod.ServiceAccountName,
					"status.podIP": "10.0.0.10", "status.hostIP": "10.0.0.1",
				}[f.FieldRef.FieldPath]
				require.NotEmpty(t, val, "%s: env %s: fieldRef %s is not one this test stands in for", pc, e.Name, f.FieldRef.FieldPath)
			case f.ResourceFieldRef != nil:
				val = "1"
			case f.SecretKeyRef != nil:
				val = string(secretData(t, objs, f.SecretKeyRef.Name)[f.SecretKeyRef.Key])
				if val == "" {
					val = "placeholder-" + f.SecretKeyRef.Key
				}
			case f.ConfigMapKeyRef != nil:
				val = string(configMapData(t, objs, pc, f.ConfigMapKeyRef.Name, f.ConfigMapKeyRef.Optional)[f.ConfigMapKeyRef.Key])
			}
		}
		s.vars[e.Name] = val
		s.Env = append(s.Env, e.Name+"="+val)
	}
	require.Empty(t, pc.C.EnvFrom, "%s: envFrom is not stood in for", pc)
	s.Env = append(s.Env, "PATH=/usr/bin:/bin", "HOME="+s.Root)
	return s
}

// fill writes a volume's files into dir.
func (s *sandbox) fill(t *testing.T, objs []*unstructured.Unstructured, pc podContainer, v corev1.VolumeSource, dir string) {
	t.Helper()
	var written []string
	write := func(data map[string][]byte, items []corev1.KeyToPath) {
		if len(items) == 0 {
			for k, b := range data {
				require.NoError(t, os.WriteFile(filepath.Join(dir, k), b, 0o600))
				written = append(written, filepath.Join(dir, k))
			}
			return
		}
		for _, it := range items {
			b, ok := data[it.Key]
			require.True(t, ok, "%s: volume item %s is not in its source", pc, it.Key)
			p := filepath.Join(dir, it.Path)
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, b, 0o600))
			written = append(written, p)
		}
	}
	switch {
	case v.ConfigMap != nil:
		write(configMapData(t, objs, pc, v.ConfigMap.Name, v.ConfigMap.Optional), v.ConfigMap.Items)
		s.configFiles = append(s.configFiles, written...)
	case v.Secret != nil:
		write(secretData(t, objs, v.Secret.SecretName, keysOf(v.Secret.Items)...), v.Secret.Items)
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			switch {
			case src.ConfigMap != nil:
				write(configMapData(t, objs, pc, src.ConfigMap.Name, src.ConfigMap.Optional), src.ConfigMap.Items)
			case src.Secret != nil:
				write(secretData(t, objs, src.Secret.Name, keysOf(src.Secret.Items)...), src.Secret.Items)
			case src.ServiceAccountToken != nil:
				require.NoError(t, os.WriteFile(filepath.Join(dir, src.ServiceAccountToken.Path), []byte("token"), 0o600))
			}
		}
	case v.HostPath != nil, v.EmptyDir != nil, v.DownwardAPI != nil:
		// The node's own files, or nothing yet: an empty directory.
	default:
		t.Fatalf("%s: a volume kind this test does not stand in for: %+v", pc, v)
	}
}

func keysOf(items []corev1.KeyToPath) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Key)
	}
	return out
}

func configMapData(t *testing.T, objs []*unstructured.Unstructured, pc podContainer, name string, optional *bool) map[string][]byte {
	t.Helper()
	cm := helmchart.Find(objs, "ConfigMap", name)
	if cm == nil {
		require.True(t, optional != nil && *optional, "%s uses ConfigMap %s, which the chart does not render", pc, name)
		return nil
	}
	var typed corev1.ConfigMap
	require.NoError(t, helmchart.Decode(cm, &typed))
	out := map[string][]byte{}
	for k, v := range typed.Data {
		out[k] = []byte(v)
	}
	for k, v := range typed.BinaryData {
		out[k] = v
	}
	return out
}

// secretData is a rendered Secret's data, or for a Secret the chart does not render (issued by
// cert-manager, or an existing one the values name) a test serving pair and CA under the keys
// cert-manager writes, plus a placeholder for each other key asked for.
func secretData(t *testing.T, objs []*unstructured.Unstructured, name string, keys ...string) map[string][]byte {
	t.Helper()
	if sec := helmchart.Find(objs, "Secret", name); sec != nil {
		var typed corev1.Secret
		require.NoError(t, helmchart.Decode(sec, &typed))
		out := map[string][]byte{}
		for k, v := range typed.Data {
			out[k] = v
		}
		for k, v := range typed.StringData {
			out[k] = []byte(v)
		}
		return out
	}
	f := issued(t)
	out := map[string][]byte{"tls.crt": f.crt, "tls.key": f.key, "ca.crt": f.ca}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			out[k] = []byte("placeholder-" + k + "\n")
		}
	}
	return out
}

// rewriteIn replaces the mount path m, where it starts a path (preceded by a quote, a space,
// '=', ':' or the start; followed by '/' or the path's end), with to.
func rewriteIn(text, m, to string) string {
	var b strings.Builder
	for {
		i := strings.Index(text, m)
		if i < 0 {
			b.WriteString(text)
			return b.String()
		}
		end := i + len(m)
		startsPath := i == 0 || strings.ContainsRune("\"' =:\n\t[,", rune(text[i-1]))
		endsPath := end == len(text) || strings.ContainsRune("/\"' \n\t,]", rune(text[end]))
		b.WriteString(text[:i])
		if startsPath && endsPath {
			b.WriteString(to)
		} else {
			b.WriteString(m)
		}
		text = text[end:]
	}
}

// expand replaces $(VAR) with the container's variables as the kubelet does; $$ is a literal $.
func (s *sandbox) expand(in string) string {
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		if in[i] == '$' && i+1 < len(in) {
			switch in[i+1] {
			case '$':
				b.WriteByte('$')
				i++
				continue
			case '(':
				if end := strings.IndexByte(in[i:], ')'); end > 0 {
					if v, ok := s.vars[in[i+2:i+end]]; ok {
						b.WriteString(v)
						i += end
						continue
					}
				}
			}
		}
		b.WriteByte(in[i])
	}
	return b.String()
}

// path rewrites a path inside a mount to its place in the sandbox.
func (s *sandbox) path(p string) string {
	for _, m := range s.mounts {
		if p == m || strings.HasPrefix(p, m+"/") {
			return filepath.Join(s.Root, p)
		}
	}
	return p
}

// args expands and rewrites the rendered command line: --flag=value and bare values naming
// a path inside a mount point into the sandbox.
func (s *sandbox) args(in []string) []string {
	out := make([]string, len(in))
	for i, a := range in {
		a = s.expand(a)
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "-") {
			a = k + "=" + s.path(v)
		} else {
			a = s.path(a)
		}
		out[i] = a
	}
	return out
}

// flagValue is the value of --name=value in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		for _, p := range []string{"--" + name + "=", "-" + name + "="} {
			if v, ok := strings.CutPrefix(a, p); ok {
				return v, true
			}
		}
	}
	return "", false
}

// runOurs runs a petfabric container's command in check mode.
func runOurs(t *testing.T, objs []*unstructured.Unstructured, pc podContainer) (int, string) {
	t.Helper()
	bins := binaries(t)
	require.NotEmpty(t, pc.C.Command, "%s: no command (the image has no entrypoint)", pc)
	bin, ok := bins[filepath.Base(pc.C.Command[0])]
	require.True(t, ok && filepath.Dir(pc.C.Command[0]) == imagebuild.BinDir, "%s runs %s, not one of the image's programs", pc, pc.C.Command[0])
	s := newSandbox(t, objs, pc)
	args := s.args(append(append([]string{}, pc.C.Command[1:]...), pc.C.Args...))
	// The node's initiator name is the node's file (hostPath), not the chart's: stand in
	// for it.
	if p, ok := flagValue(args, "initiator-file"); ok {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, []byte("InitiatorName=iqn.2026-11.io.petfabric:chartflags\n"), 0o600))
		}
	}
	args = append(args, "--check")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = s.Root, s.Env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), fmt.Sprintf("%s %q: %s", pc.C.Command[0], args, out)
	}
	require.NoError(t, err, "%s", pc)
	require.Contains(t, string(out), "check passed", "%s: exit 0 without the check mode's verdict: %s", pc, out)
	return 0, fmt.Sprintf("%s %q: %s", pc.C.Command[0], args, out)
}

// runKubeScheduler runs the pinned kube-scheduler with the rendered arguments up to the end of
// its set-up: flags parsed and validated, the --config file loaded and validated, the
// extenders built (their TLS files read), the profiles made. --write-config-to marks that
// point (the file appears once set-up succeeded; since v1.36 the process goes on to run, so
// it is then stopped). Two additions stand in for the pod: --master (the in-cluster
// configuration exists only in a pod; nothing is contacted before the dump) and a free
// --secure-port (the pod has its own network namespace).
func runKubeScheduler(t *testing.T, objs []*unstructured.Unstructured, pc podContainer) (int, string) {
	t.Helper()
	bins, err := cluster.DefaultBinaries()
	require.NoError(t, err)
	if _, err := os.Stat(bins.KubeScheduler); err != nil {
		cluster.RequireBinaries(t)
	}
	s := newSandbox(t, objs, pc)
	var args []string
	for _, a := range s.args(append(append([]string{}, pc.C.Command[1:]...), pc.C.Args...)) {
		if strings.HasPrefix(a, "--secure-port=") {
			a = fmt.Sprintf("--secure-port=%d", fixtures.FreePort(t))
		}
		args = append(args, a)
	}
	written := filepath.Join(s.Root, "written-config.yaml")
	args = append(args, "--master=https://127.0.0.1:1", "--write-config-to="+written)
	cmd := exec.Command(bins.KubeScheduler, args...)
	cmd.Dir, cmd.Env = s.Root, s.Env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(90 * time.Second)
	for {
		select {
		case err := <-done:
			if st, serr := os.Stat(written); err == nil && serr == nil && st.Size() > 0 {
				return 0, fmt.Sprintf("kube-scheduler %q: set-up succeeded, configuration written", args)
			}
			code := 1 // exiting without the dump is a refusal, whatever the status
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() > 0 {
				code = ee.ExitCode()
			}
			return code, fmt.Sprintf("kube-scheduler %q exited: %v: %s", args, err, out.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("%s: kube-scheduler neither wrote its configuration nor exited: %s", pc, out.String())
		case <-time.After(100 * time.Millisecond):
			if st, err := os.Stat(written); err == nil && st.Size() > 0 {
				_ = cmd.Process.Kill()
				<-done
				return 0, fmt.Sprintf("kube-scheduler %q: set-up succeeded", args)
			}
		}
	}
}

// run runs one container's command and returns its exit status and a description.
func run(t *testing.T, objs []*unstructured.Unstructured, pc podContainer) (int, string) {
	t.Helper()
	switch {
	case len(pc.C.Command) > 0 && filepath.Dir(pc.C.Command[0]) == imagebuild.BinDir && filepath.Base(pc.C.Command[0]) != "kube-scheduler":
		return runOurs(t, objs, pc)
	case strings.Contains(pc.C.Image, "/kube-scheduler:"):
		return runKubeScheduler(t, objs, pc)
	}
	t.Fatalf("%s (image %s, command %q) is neither one of petfabric's programs nor a known upstream one", pc, pc.C.Image, pc.C.Command)
	return 0, ""
}

func ciFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(helmchart.ChartDir(), "ci", "*-values.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "charts/petfabric/ci has no values files")
	return files
}

// TestRenderedCommandsAccepted: every container command of every ci rendering is accepted.
func TestRenderedCommandsAccepted(t *testing.T) {
	helmchart.Helm(t)
	seen := map[string]bool{}
	for _, f := range ciFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			objs := helmchart.Objects(t, helmchart.Render(t, "", "--values", f))
			pcs := containers(t, objs)
			require.NotEmpty(t, pcs, "the rendering has no workloads")
			for _, pc := range pcs {
				t.Run(pc.Workload+"/"+pc.C.Name, func(t *testing.T) {
					code, out := run(t, objs, pc)
					require.Equal(t, 0, code, "%s refused the rendered command line: %s", pc, out)
					t.Log(out)
					seen[pc.Workload+"/"+pc.C.Name] = true
				})
			}
		})
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("containers checked: %s", strings.Join(names, ", "))
}

// TestMutatedRenderingRefused: the check is not a rubber stamp — a rendered container with
// an unknown flag, a value out of range or a missing volume is refused with exit status 2.
func TestMutatedRenderingRefused(t *testing.T) {
	helmchart.Helm(t)
	objs := helmchart.Objects(t, helmchart.Render(t, "", "--values", filepath.Join(helmchart.ChartDir(), "ci", "default-values.yaml")))
	var webhook *podContainer
	for _, pc := range containers(t, objs) {
		if len(pc.C.Command) > 0 && pc.C.Command[0] == imagebuild.BinDir+"/webhook" {
			webhook = &pc
			break
		}
	}
	require.NotNil(t, webhook, "the default rendering runs the webhook")
	code, out := run(t, objs, *webhook)
	require.Equal(t, 0, code, "unmutated: %s", out)

	for _, tc := range []struct {
		name   string
		mutate func(pc *podContainer)
		want   string
	}{
		{"unknown flag", func(pc *podContainer) { pc.C.Args = append(pc.C.Args, "--no-such-flag=1") }, "flag provided but not defined: -no-such-flag"},
		{"bad value", func(pc *podContainer) { pc.C.Args = append(pc.C.Args, "--kube-api-qps=0") }, "--kube-api-qps 0"},
		{"unparsable value", func(pc *podContainer) { pc.C.Args = append(pc.C.Args, "--create-budget=soon") }, `invalid value "soon"`},
		{"TLS volume not mounted", func(pc *podContainer) { pc.C.VolumeMounts = nil }, "read TLS file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := *webhook
			pc.C = *webhook.C.DeepCopy()
			tc.mutate(&pc)
			code, out := run(t, objs, pc)
			require.Equal(t, 2, code, "a mutated rendering must be refused: %s", out)
			require.Contains(t, out, tc.want)
		})
	}
}

// TestMutatedSchedulerRefused: the kube-scheduler check fails too — an unknown flag, or the
// extender's CA not mounted where the rendered configuration names it.
func TestMutatedSchedulerRefused(t *testing.T) {
	helmchart.Helm(t)
	objs := helmchart.Objects(t, helmchart.Render(t, "", "--values", filepath.Join(helmchart.ChartDir(), "ci", "secondary-scheduler-values.yaml")))
	var sched *podContainer
	for _, pc := range containers(t, objs) {
		if strings.Contains(pc.C.Image, "/kube-scheduler:") {
			sched = &pc
			break
		}
	}
	require.NotNil(t, sched, "the secondary-scheduler rendering runs kube-scheduler")
	for _, tc := range []struct {
		name   string
		mutate func(pc *podContainer)
		want   string
	}{
		{"unknown flag", func(pc *podContainer) { pc.C.Args = append(pc.C.Args, "--no-such-flag=1") }, "unknown flag: --no-such-flag"},
		{"extender CA not mounted", func(pc *podContainer) {
			var keep []corev1.VolumeMount
			for _, m := range pc.C.VolumeMounts {
				if !strings.Contains(m.MountPath, "ca") {
					keep = append(keep, m)
				}
			}
			require.Less(t, len(keep), len(pc.C.VolumeMounts), "the scheduler mounts the extender's CA")
			pc.C.VolumeMounts = keep
		}, "couldn't build extenders"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := *sched
			pc.C = *sched.C.DeepCopy()
			tc.mutate(&pc)
			code, out := run(t, objs, pc)
			require.NotEqual(t, 0, code, "a mutated rendering must be refused: %s", out)
			require.Contains(t, out, tc.want)
		})
	}
}
