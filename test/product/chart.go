package product

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// Release and Namespace of the chart installation.
const (
	Release   = "petfabric"
	Namespace = "petfabric-system"
)

// repoRoot is the repository's root, found from this source file.
func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// chartValues are the chart's values for this machine: the webhook in url mode on a local
// port (the apiserver calls it there), the extender in host-network DaemonSet mode on a local
// port (the harness's kube-scheduler gets the rendered configuration), the CA of this
// environment as tls.caBundle (no cert-manager), one backstore (the simulator) whose portal is
// tgtd's, and the driver's node config allowing the simulator's plain-http endpoint. The node
// config also selects the loop-device initiator stand-in: this kernel has no iscsi_tcp (see
// exporter). The DaemonSet's pods are placed on the kubelet nodes (the fake CRI runs no
// container) so each agent's token is bound to its node's pod; its host paths point into
// this environment's directory.
func (e *Env) chartValues(webhookURL string, caPEM []byte) map[string]any {
	return map[string]any{
		"clusterID": "demo",
		"logLevel":  "debug",
		"webhook":   map[string]any{"url": webhookURL, "replicas": 1},
		"tls": map[string]any{"caBundle": string(caPEM),
			"webhookSecretName": Release + "-webhook-tls", "extenderSecretName": Release + "-extender-tls"},
		"datera": map[string]any{"existingSecret": CredentialsSecret},
		"scheduler": map[string]any{"mode": "DaemonSet", "hostPort": e.extenderPort, "healthPort": e.extenderHealth,
			"ignorable": false},
		"node": map[string]any{
			"pluginDir":     filepath.Join(e.Dir, "host", "plugins"),
			"configDir":     filepath.Join(e.Dir, "host", "config"),
			"stateDir":      filepath.Join(e.Dir, "host", "state"),
			"initiatorFile": filepath.Join(e.Dir, "host", "iscsi", "initiatorname.iscsi"),
			"interval":      "2s",
			"backstores":    map[string]any{e.Backstore: map[string]any{"portals": []string{e.Portal}}},
			"config": map[string]any{
				"allowedBackstores": []string{e.Backstore}, "allowInsecureHTTP": true,
				"initiator": "loop-standin", "initiatorDir": e.targetsDir(), "multipath": "off",
				"deviceWaitTimeout": "10s", "availableTimeout": "20s", "logLevel": "debug",
			},
		},
	}
}

// helm runs the pinned helm with args (and --values file), returning stdout.
func (e *Env) helm(ctx context.Context, valuesFile string, args ...string) (string, error) {
	if valuesFile != "" {
		args = append(args, "--values", valuesFile)
	}
	cmd := exec.CommandContext(ctx, e.bins.Helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(e.Dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(e.Dir, "helm", "config"), "HELM_DATA_HOME="+filepath.Join(e.Dir, "helm", "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func writeValues(path string, v map[string]any) error {
	b, err := sigsyaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// manifestObject is one document of a rendered manifest.
type manifestObject struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	raw []byte
}

// parseManifest splits a multi-document YAML manifest into its objects.
func parseManifest(manifest string) ([]manifestObject, error) {
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var out []manifestObject
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if err.Error() == "EOF" {
				return out, nil
			}
			return nil, fmt.Errorf("parse manifest: %w", err)
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var o manifestObject
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, fmt.Errorf("parse manifest object: %w", err)
		}
		o.raw = raw
		out = append(out, o)
	}
}

func findObject(objs []manifestObject, kind, name string, into any) error {
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return json.Unmarshal(o.raw, into)
		}
	}
	return fmt.Errorf("the rendering has no %s %s", kind, name)
}

// podTemplate returns the pod template of the Deployment or DaemonSet name.
func podTemplate(objs []manifestObject, kind, name string) (corev1.PodTemplateSpec, error) {
	switch kind {
	case "Deployment":
		var d appsv1.Deployment
		err := findObject(objs, kind, name, &d)
		return d.Spec.Template, err
	case "DaemonSet":
		var d appsv1.DaemonSet
		err := findObject(objs, kind, name, &d)
		return d.Spec.Template, err
	}
	return corev1.PodTemplateSpec{}, fmt.Errorf("no pod template in a %s", kind)
}

func containerOf(t corev1.PodTemplateSpec, name string) (corev1.Container, error) {
	for _, c := range append(append([]corev1.Container(nil), t.Spec.InitContainers...), t.Spec.Containers...) {
		if c.Name == name {
			return c, nil
		}
	}
	return corev1.Container{}, fmt.Errorf("no container %s", name)
}

// HostArgs turns a rendered container's args into a host process's: each $(VAR) from env,
// each path under a container mount point (mounts: mount path → host directory) moved to the
// host directory, and each --flag in override given its value (added when absent). Only
// paths and addresses change; every other flag is the chart's.
func HostArgs(c corev1.Container, env, mounts, override map[string]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range c.Args {
		for k, v := range env {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		flag, val, hasVal := strings.Cut(a, "=")
		if v, ok := override[flag]; ok {
			a, seen[flag] = flag+"="+v, true
		} else if hasVal {
			for from, to := range mounts {
				if strings.HasPrefix(val, from+"/") || val == from {
					a = flag + "=" + to + strings.TrimPrefix(val, from)
				}
			}
		}
		out = append(out, a)
	}
	for flag, v := range override {
		if !seen[flag] {
			out = append(out, flag+"="+v)
		}
	}
	return out
}

// schedulerConfig decodes the rendered scheduler configuration ConfigMap.
func schedulerConfig(objs []manifestObject) (*schedconfigv1.KubeSchedulerConfiguration, string, error) {
	var cm corev1.ConfigMap
	if err := findObject(objs, "ConfigMap", Release+"-scheduler", &cm); err != nil {
		return nil, "", err
	}
	text := cm.Data["scheduler-config.yaml"]
	var cfg schedconfigv1.KubeSchedulerConfiguration
	if err := sigsyaml.UnmarshalStrict([]byte(text), &cfg); err != nil {
		return nil, "", fmt.Errorf("decode the rendered scheduler configuration: %w", err)
	}
	return &cfg, text, nil
}
