package flex

import (
	"fmt"
	"log/slog"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/petfabric/petfabric/pkg/iscsi"
)

// Driver runs the FlexVolume verbs on one node. Each kubelet call is a new process with a new
// Driver; everything that must survive a call lives in the state directory.
type Driver struct {
	Config *NodeConfig
	State  State
	Log    *slog.Logger
	// Initiator logs in and out (open-iscsi in production).
	Initiator iscsi.Initiator
	// Devices locates the by-path links.
	Devices iscsi.Devices
	// Multipath: log in on every portal and mount the dm-multipath device above the paths.
	Multipath bool
	// Mounter mounts and unmounts (k8s.io/mount-utils).
	Mounter mount.Interface
	// Exec runs blkid, mkfs and fsck.
	Exec utilexec.Interface
	// NewDatera returns a Datera client for the volume's cluster, tenant and login.
	NewDatera func(DateraParams) (DateraAPI, error)
	// InitiatorName is this node's iSCSI initiator name; read from Config.InitiatorNameFile
	// when empty.
	InitiatorName string
	// Crash is the crash-injection hook (see crash.go); nil means none, as in every production
	// build.
	Crash func(step string)
	// MultipathWait bounds the wait for the dm device above the paths (default 10s).
	MultipathWait time.Duration

	// accessCheckOff skips the per-mount credential check. Only the package's benchmarks set
	// it, to measure what the check costs against the code path without it.
	accessCheckOff bool
}

// InitiatorFactory builds the initiator selected by NodeConfig.Initiator.
type InitiatorFactory func(cfg *NodeConfig, ex utilexec.Interface, multipath bool, log *slog.Logger) (iscsi.Initiator, error)

var (
	initiatorsMu sync.Mutex
	initiators   = map[string]InitiatorFactory{InitiatorIscsiadm: newIscsiadm}
)

// RegisterInitiator makes an initiator implementation selectable by name in the node config.
// The test stand-in registers itself this way when built with the petfabric_standin tag.
func RegisterInitiator(name string, f InitiatorFactory) {
	initiatorsMu.Lock()
	defer initiatorsMu.Unlock()
	initiators[name] = f
}

func newIscsiadm(cfg *NodeConfig, ex utilexec.Interface, multipath bool, log *slog.Logger) (iscsi.Initiator, error) {
	return &iscsi.Iscsiadm{
		Exec: ex, Devices: iscsi.Devices{ByPathDir: cfg.ByPathDir, SysfsDir: cfg.SysfsDir},
		Multipath: multipath, Log: log.With("component", "iscsiadm"),
	}, nil
}

// NewDriver wires the production driver from a node config.
func NewDriver(cfg *NodeConfig, log *slog.Logger) (*Driver, error) {
	ex := utilexec.New()
	multipath := cfg.Multipath == "on"
	if cfg.Multipath == "auto" {
		_, err := exec.LookPath("multipath")
		multipath = err == nil
	}
	initiatorsMu.Lock()
	factory, ok := initiators[cfg.Initiator]
	names := make([]string, 0, len(initiators))
	for n := range initiators {
		names = append(names, n)
	}
	initiatorsMu.Unlock()
	if !ok {
		sort.Strings(names)
		return nil, fmt.Errorf("initiator %q is not available in this build (have: %s)", cfg.Initiator, strings.Join(names, ", "))
	}
	ini, err := factory(cfg, ex, multipath, log)
	if err != nil {
		return nil, fmt.Errorf("initiator %s: %w", cfg.Initiator, err)
	}
	return &Driver{
		Config: cfg, State: State{Dir: cfg.StateDir}, Log: log, Initiator: ini,
		Devices:   iscsi.Devices{ByPathDir: cfg.ByPathDir, SysfsDir: cfg.SysfsDir},
		Multipath: multipath, Mounter: mount.NewWithoutSystemd(""), Exec: ex,
		NewDatera: newDateraClient(cfg, log),
	}, nil
}

func (d *Driver) crash(step string) {
	if d.Crash != nil {
		d.Crash(step)
	}
}

func (d *Driver) initiatorName() (string, error) {
	if d.InitiatorName == "" {
		n, err := ReadInitiatorName(d.Config.InitiatorNameFile)
		if err != nil {
			return "", err
		}
		d.InitiatorName = n
	}
	return d.InitiatorName, nil
}

func (d *Driver) globalPath(id string) string { return d.Config.GlobalMountDir + "/" + id }
