package flextest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/mount-utils"

	"github.com/petfabric/petfabric/internal/testenv"
	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// Credentials of the simulator user the tests mount with; the password is distinctive so the
// secrets-in-logs checks can search for it.
const (
	User     = "flexuser"
	Password = "Pw_flexSecret.4711"
)

// InitiatorName is the node's initiator name in every Env.
const InitiatorName = "iqn.1993-08.org.debian:01:petfabrictest"

// Env is one node with the driver's directories under a temp root, a Datera simulator on
// 127.0.0.1 exporting volumes as loop-backed targets, and a node config file for the driver.
type Env struct {
	T          testing.TB
	Root       string
	Sim        *fake.Server
	SimURL     string
	Targets    *LoopTargets
	Client     *datera.Client
	ConfigFile string
	Config     map[string]any
	StateDir   string
	GlobalDir  string
	ByPathDir  string
	LogFile    string
	TargetsDir string
	// NodeName and InitiatorName identify this node.
	NodeName, InitiatorName string
	shared                  bool
}

// EnvOptions tune NewEnv.
type EnvOptions struct {
	// Portals reported by the simulator (default one, 192.0.2.1).
	Portals []string
	// Config entries added to (or replacing) the node config.
	Config map[string]any
	// Sim adjusts the simulator's options (users, tenants, ACL order) before it starts.
	Sim func(*fake.Options)
	// Share makes this Env a second node of the same Datera cluster: it uses Share's simulator
	// and loop targets (so the target ACL decides who may log in) and has its own state, global
	// mount, by-path and initiator name. The Env that owns the targets detaches them at the end.
	Share *Env
	// NodeName and InitiatorName of this node (defaults node-a and InitiatorName).
	NodeName, InitiatorName string
}

// NewEnv builds an Env. It needs root, losetup, blkid, mkfs.xfs and mkfs.ext4 (fails under
// PETFABRIC_STRICT=1, skips otherwise) and cleans up every mount and loop device it made, even
// when the test fails.
func NewEnv(t testing.TB, opts EnvOptions) *Env {
	t.Helper()
	testenv.Root(t)
	for _, c := range []string{"losetup", "blkid", "mkfs.xfs", "mkfs.ext4", "mount", "umount"} {
		testenv.LookPath(t, c)
	}
	root, err := os.MkdirTemp("", "flex-")
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{T: t, Root: root,
		StateDir: filepath.Join(root, "state"), GlobalDir: filepath.Join(root, "global"),
		ByPathDir: filepath.Join(root, "dev", "disk", "by-path"), LogFile: filepath.Join(root, "log", "flex.log"),
		TargetsDir: filepath.Join(root, "targets"), ConfigFile: filepath.Join(root, "flex.json"),
		NodeName: opts.NodeName, InitiatorName: opts.InitiatorName}
	if e.NodeName == "" {
		e.NodeName = "node-a"
	}
	if e.InitiatorName == "" {
		e.InitiatorName = InitiatorName
	}
	t.Cleanup(func() { e.cleanup() })
	if opts.Share != nil {
		e.shared = true
		e.Sim, e.SimURL, e.Client = opts.Share.Sim, opts.Share.SimURL, opts.Share.Client
		e.Targets, e.TargetsDir = opts.Share.Targets, opts.Share.TargetsDir
	} else {
		e.Targets = &LoopTargets{Dir: e.TargetsDir}
		portals := opts.Portals
		if len(portals) == 0 {
			portals = []string{"192.0.2.1"}
		}
		so := fake.Options{Users: map[string]string{User: Password}, Portals: portals, Exporter: e.Targets}
		if opts.Sim != nil {
			opts.Sim(&so)
		}
		e.Sim, err = fake.New(so)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(e.Sim)
		t.Cleanup(srv.Close)
		e.SimURL = srv.URL
		e.Client, err = datera.New(datera.Config{Endpoint: srv.URL, Username: User, Password: Password})
		if err != nil {
			t.Fatal(err)
		}
	}
	initiatorFile := filepath.Join(root, "initiatorname.iscsi")
	if err := os.WriteFile(initiatorFile, []byte("## generated\nInitiatorName="+e.InitiatorName+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.Config = map[string]any{
		"nodeName": e.NodeName, "initiatorNameFile": initiatorFile, "stateDir": e.StateDir,
		"globalMountDir": e.GlobalDir, "logFile": e.LogFile, "byPathDir": e.ByPathDir,
		"sysfsDir": filepath.Join(root, "sys"), "initiator": "loop-standin", "initiatorDir": e.TargetsDir,
		"multipath": "off", "deviceWaitTimeout": "5s", "availableTimeout": "20s", "logLevel": "debug",
		// The simulator serves plain http on 127.0.0.1: allow exactly it.
		"allowedBackstores": []string{strings.TrimPrefix(e.SimURL, "http://")}, "allowInsecureHTTP": true,
	}
	for k, v := range opts.Config {
		e.Config[k] = v
	}
	e.WriteConfig()
	return e
}

// WriteConfig (re)writes the node config file from e.Config.
func (e *Env) WriteConfig() {
	b, err := json.Marshal(e.Config)
	if err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(e.ConfigFile, b, 0o644); err != nil {
		e.T.Fatal(err)
	}
}

// Options returns the JSON kubelet would pass to mount for volume id, with the secretRef values
// (base64) of the simulator user. extra entries are added; an empty value deletes a key.
func (e *Env) Options(id string, extra map[string]string) string {
	return KubeletMountOptions(e.SimURL, id, "xfs", User, Password, extra)
}

// KubeletMountOptions is the JSON kubelet passes to `mount` for a PersistentVolume with volume
// id on backstore, the given fsType and a secretRef holding username and password (base64, as
// kubelet sends secret values). extra entries are added; an empty value deletes a key.
func KubeletMountOptions(backstore, id, fsType, username, password string, extra map[string]string) string {
	o := map[string]string{
		"volumeID": id, "size": "1", "replica": "1", "backstoreServer": backstore,
		"kubernetes.io/fsType": fsType, "kubernetes.io/readwrite": "rw",
		"kubernetes.io/pvOrVolumeName": "pv-" + id, "kubernetes.io/pod.name": "pod", "kubernetes.io/pod.namespace": "ns",
		"kubernetes.io/pod.uid": "uid", "kubernetes.io/serviceAccount.name": "default",
		"kubernetes.io/secret/username": base64.StdEncoding.EncodeToString([]byte(username)),
		"kubernetes.io/secret/password": base64.StdEncoding.EncodeToString([]byte(password)),
	}
	for k, v := range extra {
		if v == "" {
			delete(o, k)
		} else {
			o[k] = v
		}
	}
	b, _ := json.Marshal(o)
	return string(b)
}

// PodDir returns a kubelet-style pod volume directory (not created: kubelet creates it, and so
// does the driver).
func (e *Env) PodDir(pod string) string {
	return filepath.Join(e.Root, "kubelet", "pods", pod, "volumes", "datera~iscsi", "vol")
}

// ACL returns the initiators in the volume's ACL, read through the Datera API.
func (e *Env) ACL(id string) []string {
	acl, err := e.Client.GetACL(context.Background(), id, datera.StorageInstanceName)
	if err != nil {
		e.T.Fatalf("reading the ACL of %s: %v", id, err)
	}
	var out []string
	for _, r := range acl.Initiators {
		out = append(out, r.InitiatorIQN())
	}
	return out
}

// Backing returns the backing file of volume id (it must exist on the simulator).
func (e *Env) Backing(id string) string { return BackingFileOf(e.T, e.Client, e.Targets, id) }

// BackingFileOf returns the file behind volume id's LUN: the volume's UUID read from Datera through
// c, looked up in targets (the loop stand-in's or tgtd's exporter). It fails t when there is none.
func BackingFileOf(t testing.TB, c *datera.Client, targets interface{ BackingFile(uuid string) string }, id string) string {
	t.Helper()
	ai, err := c.GetAppInstance(context.Background(), id)
	if err != nil {
		t.Fatalf("reading %s: %v", id, err)
	}
	_, v, ok := ai.Volume()
	if !ok {
		t.Fatalf("%s has no volume", id)
	}
	return targets.BackingFile(v.UUID)
}

// IQN returns the target name of volume id.
func (e *Env) IQN(id string) string {
	ai, err := e.Client.GetAppInstance(context.Background(), id)
	if err != nil {
		e.T.Fatalf("reading %s: %v", id, err)
	}
	si, _, _ := ai.Volume()
	return si.Access.IQN
}

// Mounts lists the mount points under the env root.
func (e *Env) Mounts() []string {
	mi, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		e.T.Fatal(err)
	}
	var out []string
	for _, m := range mi {
		if strings.HasPrefix(m.MountPoint, e.Root+"/") {
			out = append(out, m.MountPoint)
		}
	}
	return out
}

// LogText returns the driver log and its rotated backups.
func (e *Env) LogText() string {
	var b strings.Builder
	files, _ := filepath.Glob(e.LogFile + "*")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		b.Write(data)
	}
	return b.String()
}

// cleanup lazily unmounts everything under the root (deepest first) and detaches the loop
// devices of the env's backing files: only what this env made.
func (e *Env) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mounts := e.Mounts()
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		_ = exec.CommandContext(ctx, "umount", "-l", m).Run()
	}
	if !e.shared {
		files, _ := filepath.Glob(filepath.Join(e.TargetsDir, "backing", "*.img"))
		for _, f := range files {
			_ = DetachBacking(ctx, f)
		}
	}
	if !e.T.Failed() {
		_ = os.RemoveAll(e.Root)
	} else {
		e.T.Logf("kept %s for inspection", e.Root)
	}
}
