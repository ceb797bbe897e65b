package flex

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/petfabric/petfabric/pkg/iscsi"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Environment variables. kubelet runs the driver with its own environment, so on a node the
// config file at DefaultConfigPath is the normal way; the variables serve tests and the agent.
const (
	EnvConfig   = "PETFABRIC_FLEX_CONFIG"
	EnvStateDir = "PETFABRIC_FLEX_STATE_DIR"
	EnvCrashAt  = "PETFABRIC_FLEX_CRASH_AT" // read only by test builds (tag petfabric_crash)
)

// Defaults of NodeConfig.
const (
	DefaultConfigPath        = "/etc/petfabric/flex.json"
	DefaultStateDir          = "/var/lib/petfabric/flex"
	DefaultGlobalMountDir    = "/var/lib/kubelet/plugins/petfabric.io/datera-iscsi/mounts"
	DefaultLogFile           = "/var/log/petfabric/flex.log"
	DefaultInitiatorNameFile = "/etc/iscsi/initiatorname.iscsi"
	DefaultFSType            = "xfs"
	DefaultLogMaxBytes       = 10 << 20
	DefaultLogBackups        = 3
	InitiatorIscsiadm        = "iscsiadm"
)

// NodeConfig is the node's driver configuration (JSON). Every field is optional.
type NodeConfig struct {
	// NodeName labels this node's initiator on Datera (default: host name).
	NodeName string `json:"nodeName,omitempty"`
	// InitiatorNameFile holds "InitiatorName=<iqn>" (default /etc/iscsi/initiatorname.iscsi).
	InitiatorNameFile string `json:"initiatorNameFile,omitempty"`
	// StateDir holds one <volumeID>.json per attached volume, read by the node agent, plus
	// locks/ and credentials/ (default /var/lib/petfabric/flex; env PETFABRIC_FLEX_STATE_DIR wins).
	StateDir string `json:"stateDir,omitempty"`
	// GlobalMountDir holds the per-volume global mounts <dir>/<volumeID>.
	GlobalMountDir string `json:"globalMountDir,omitempty"`
	// LogFile receives JSON logs; LogMaxBytes and LogBackups rotate it.
	LogFile     string `json:"logFile,omitempty"`
	LogMaxBytes int64  `json:"logMaxBytes,omitempty"`
	LogBackups  int    `json:"logBackups,omitempty"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `json:"logLevel,omitempty"`
	// CredentialsFile is the fallback Datera login when the PV's secretRef gives none:
	// {"username": "...", "password": "...", "chap": {...}}.
	CredentialsFile string `json:"credentialsFile,omitempty"`
	// CHAP is the session CHAP used when neither the secret nor the credentials file has one.
	CHAP *CHAPConfig `json:"chap,omitempty"`
	// AllowedBackstores lists the Datera management endpoints, as host:port, that this node may
	// send credentials to. A volume whose backstoreServer resolves to anything else fails. Empty
	// (the default) denies every volume: an attacker-chosen backstoreServer would otherwise
	// receive the Datera login of whoever mounts.
	AllowedBackstores []string `json:"allowedBackstores,omitempty"`
	// AllowInsecureHTTP permits plain-http endpoints (a backstoreServer on port 7717 or an
	// http:// URL). Default false: https only, so credentials never cross the network in clear.
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`
	// AccessCheckCacheTTL is how long a positive answer of the per-mount credential check (these
	// credentials can see this volume) is reused by later mounts on this node: default 30s, at
	// most 5m, "0s" checks with Datera on every mount. See access.go.
	AccessCheckCacheTTL *Duration `json:"accessCheckCacheTTL,omitempty"`
	// RWOSettleTimeout bounds how long a mount of a ReadWriteOnce volume waits for nodes that
	// raced it into the ACL to withdraw (default 5s). See fence.go.
	RWOSettleTimeout Duration `json:"rwoSettleTimeout,omitempty"`
	// DateraCAFile trusts an extra CA for https endpoints; DateraInsecureSkipVerify disables
	// verification (explicit opt-in only).
	DateraCAFile             string `json:"dateraCAFile,omitempty"`
	DateraInsecureSkipVerify bool   `json:"dateraInsecureSkipVerify,omitempty"`
	// DefaultFSType applies when the PV has no fsType (default xfs, Datera's default).
	DefaultFSType string `json:"defaultFSType,omitempty"`
	// ByPathDir and SysfsDir locate devices (defaults /dev/disk/by-path and /sys).
	ByPathDir string `json:"byPathDir,omitempty"`
	SysfsDir  string `json:"sysfsDir,omitempty"`
	// Initiator selects the initiator implementation: "iscsiadm" (default), or a test stand-in
	// compiled in with a build tag. InitiatorDir is the stand-in's state directory.
	Initiator    string `json:"initiator,omitempty"`
	InitiatorDir string `json:"initiatorDir,omitempty"`
	// Multipath is "auto" (default: on when the multipath command exists), "on" or "off".
	Multipath string `json:"multipath,omitempty"`
	// Timeouts (Go durations).
	MountTimeout      Duration `json:"mountTimeout,omitempty"`      // whole mount call, default 5m
	UnmountTimeout    Duration `json:"unmountTimeout,omitempty"`    // whole unmount call, default 3m
	LockTimeout       Duration `json:"lockTimeout,omitempty"`       // waiting for the volume lock, default 4m
	DeviceWaitTimeout Duration `json:"deviceWaitTimeout,omitempty"` // first by-path link, default 30s
	AvailableTimeout  Duration `json:"availableTimeout,omitempty"`  // Datera op_state available, default 2m
	// ForceUnmountAfter is how long the unmount of a volume's global mount may take before it is
	// retried with force (umount -f), default 30s: a dead iSCSI session must not hang kubelet.
	ForceUnmountAfter Duration `json:"forceUnmountAfter,omitempty"`

	// path is the file the config was read from ("" for defaults only), for error messages.
	path string
}

// Bounds of AccessCheckCacheTTL.
const (
	DefaultAccessCheckCacheTTL = 30 * time.Second
	MaxAccessCheckCacheTTL     = 5 * time.Minute
)

// accessCacheTTL is the configured cache lifetime; 0 disables the cache.
func (c *NodeConfig) accessCacheTTL() time.Duration {
	if c.AccessCheckCacheTTL == nil {
		return DefaultAccessCheckCacheTTL
	}
	return time.Duration(*c.AccessCheckCacheTTL)
}

// describePath names the config file for messages.
func (c *NodeConfig) describePath() string {
	if c.path == "" {
		return "the node config (" + DefaultConfigPath + ")"
	}
	return "the node config " + c.path
}

// CHAPConfig is session CHAP in configuration files.
type CHAPConfig struct {
	Username   string `json:"username"`
	Password   string `json:"password"`
	UsernameIn string `json:"usernameIn,omitempty"`
	PasswordIn string `json:"passwordIn,omitempty"`
}

func (c *CHAPConfig) session() *iscsi.SessionCHAP {
	if c == nil || c.Username == "" {
		return nil
	}
	return &iscsi.SessionCHAP{Username: c.Username, Password: c.Password, UsernameIn: c.UsernameIn, PasswordIn: c.PasswordIn}
}

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration time.Duration

// UnmarshalJSON reads "30s"-style strings.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d Duration) or(def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
}

// LoadConfig reads the config file named by $PETFABRIC_FLEX_CONFIG, or DefaultConfigPath when
// that exists, applies the environment and the defaults, and validates. A missing default file
// means all defaults; a named file that is missing is an error.
func LoadConfig() (*NodeConfig, error) {
	path, named := os.LookupEnv(EnvConfig)
	if !named {
		path = DefaultConfigPath
	}
	cfg := &NodeConfig{path: path}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(cfg); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist) && !named:
	default:
		return nil, fmt.Errorf("config: %w", err)
	}
	if v := os.Getenv(EnvStateDir); v != "" {
		cfg.StateDir = v
	}
	if err := cfg.complete(); err != nil {
		// cfg still carries the defaults and the file's log settings, for logging the error.
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// complete applies defaults and validates.
func (c *NodeConfig) complete() error {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.InitiatorNameFile, DefaultInitiatorNameFile)
	def(&c.StateDir, DefaultStateDir)
	def(&c.GlobalMountDir, DefaultGlobalMountDir)
	def(&c.LogFile, DefaultLogFile)
	def(&c.DefaultFSType, DefaultFSType)
	def(&c.ByPathDir, iscsi.DefaultByPathDir)
	def(&c.SysfsDir, iscsi.DefaultSysfsDir)
	def(&c.Initiator, InitiatorIscsiadm)
	def(&c.Multipath, "auto")
	def(&c.LogLevel, "info")
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("nodeName not set and no host name: %w", err)
		}
		c.NodeName = h
	}
	if c.LogMaxBytes <= 0 {
		c.LogMaxBytes = DefaultLogMaxBytes
	}
	if c.LogBackups <= 0 {
		c.LogBackups = DefaultLogBackups
	}
	for name, p := range map[string]string{"stateDir": c.StateDir, "globalMountDir": c.GlobalMountDir,
		"logFile": c.LogFile, "byPathDir": c.ByPathDir, "sysfsDir": c.SysfsDir, "initiatorNameFile": c.InitiatorNameFile} {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			return fmt.Errorf("%s %q must be an absolute clean path", name, p)
		}
	}
	if !slices.Contains([]string{"auto", "on", "off"}, c.Multipath) {
		return fmt.Errorf("multipath %q: want auto, on or off", c.Multipath)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		return fmt.Errorf("logLevel %q: want debug, info, warn or error", c.LogLevel)
	}
	if !pvoptions.ValidFSType(c.DefaultFSType) {
		return fmt.Errorf("defaultFSType %q is not supported", c.DefaultFSType)
	}
	if c.CHAP != nil {
		if err := c.CHAP.session().Validate(); err != nil {
			return fmt.Errorf("chap: %w", err)
		}
	}
	for i, b := range c.AllowedBackstores {
		norm, err := normalizeHostPort(b)
		if err != nil {
			return fmt.Errorf("allowedBackstores[%d] %q: %w", i, b, err)
		}
		c.AllowedBackstores[i] = norm
	}
	if ttl := c.AccessCheckCacheTTL; ttl != nil && (*ttl < 0 || time.Duration(*ttl) > MaxAccessCheckCacheTTL) {
		return fmt.Errorf("accessCheckCacheTTL %s: want 0s (no cache) to %s", time.Duration(*ttl), MaxAccessCheckCacheTTL)
	}
	for name, d := range map[string]Duration{"rwoSettleTimeout": c.RWOSettleTimeout, "forceUnmountAfter": c.ForceUnmountAfter,
		"mountTimeout": c.MountTimeout, "unmountTimeout": c.UnmountTimeout} {
		if d < 0 {
			return fmt.Errorf("%s %s must not be negative", name, time.Duration(d))
		}
	}
	return nil
}

// ReadInitiatorName reads InitiatorName=<iqn> from an open-iscsi initiatorname file.
func ReadInitiatorName(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading the node's initiator name: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "InitiatorName="); ok {
			v = strings.TrimSpace(v)
			if err := iscsi.ValidateIQN(v); err != nil {
				return "", fmt.Errorf("initiator name in %s: %w", path, err)
			}
			return v, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return "", fmt.Errorf("no InitiatorName= line in %s", path)
}

// FileCredentials is the fallback credentials file.
type FileCredentials struct {
	Username string      `json:"username"`
	Password string      `json:"password"`
	CHAP     *CHAPConfig `json:"chap,omitempty"`
}

func loadCredentialsFile(path string) (*FileCredentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	var fc FileCredentials
	if err := json.Unmarshal(b, &fc); err != nil {
		// The error of encoding/json may quote input; do not pass it on.
		return nil, fmt.Errorf("credentials file %s is not valid JSON", path)
	}
	return &fc, nil
}
