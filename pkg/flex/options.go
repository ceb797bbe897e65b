package flex

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Option keys of the PersistentVolume contract (the webhook writes them) and the keys kubelet adds.
const (
	OptVolumeID        = "volumeID"
	OptSize            = "size"
	OptReplica         = "replica"
	OptBackstoreServer = "backstoreServer"
	OptTemplate        = "template"
	OptPlacementMode   = "placementMode"
	OptMaxIOPS         = "maxIops"
	OptMaxBW           = "maxBW"
	OptIPPool          = "ipPool"
	OptTenant          = "tenant"

	KeyFSType       = "kubernetes.io/fsType"
	KeyReadWrite    = "kubernetes.io/readwrite"
	KeyPVName       = "kubernetes.io/pvOrVolumeName"
	KeyPodName      = "kubernetes.io/pod.name"
	KeyPodNS        = "kubernetes.io/pod.namespace"
	KeyPodUID       = "kubernetes.io/pod.uid"
	KeySecretPrefix = "kubernetes.io/secret/"
)

// Secret keys (secretRef of type datera/iscsi). The CHAP keys are named like the iscsiadm
// parameters, as the in-tree iSCSI plugin and Datera's CSI driver name them.
const (
	SecretUsername       = "username"
	SecretPassword       = "password"
	SecretCHAPUser       = "node.session.auth.username"
	SecretCHAPPassword   = "node.session.auth.password"
	SecretCHAPUserIn     = "node.session.auth.username_in"
	SecretCHAPPasswordIn = "node.session.auth.password_in"
)

var knownOptions = []string{
	OptVolumeID, OptSize, OptReplica, OptBackstoreServer, OptTemplate, OptPlacementMode,
	OptMaxIOPS, OptMaxBW, OptIPPool, OptTenant,
	pvoptions.OptAccessMode, pvoptions.OptClusterID, pvoptions.OptClaimNamespace, pvoptions.OptClaimName, pvoptions.OptNamespaceUID,
}

// volumeIDRE is the Datera app_instance name rule; the ID also becomes a file name.
var volumeIDRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$`)

// Filesystems the driver creates and mounts.
var supportedFSTypes = []string{"ext3", "ext4", "xfs"}

// MountRequest is a validated `mount <dir> <json>` call.
type MountRequest struct {
	Dir      string
	VolumeID string
	// Volume is what to create on first use.
	Volume datera.CreateVolumeRequest
	// MaxIOPS and MaxBWKiB set a performance policy when non-zero (not with a template).
	MaxIOPS, MaxBWKiB int64
	BackstoreServer   string
	Endpoint          string
	Tenant            string
	FSType            string
	// ReadOnly: mount read-only. Always true for a ReadOnlyMany volume (AskedRW records that
	// kubelet asked for read-write).
	ReadOnly bool
	AskedRW  bool
	// AccessMode is pvoptions.AccessReadWriteOnce or pvoptions.AccessReadOnlyMany.
	AccessMode string
	// Owner is the claim the PV was made for (contract v2); HasOwner is false for a v1 PV.
	Owner    pvoptions.Owner
	HasOwner bool
	PVName   string
	Pod      string // namespace/name, for logs
	// Secrets holds the decoded secretRef values; never logged.
	Secrets map[string]string
	// Ignored lists option keys the driver does not know (logged as a warning).
	Ignored []string
}

// ValidateVolumeID checks a volumeID option.
func ValidateVolumeID(id string) error {
	if !volumeIDRE.MatchString(id) {
		return fmt.Errorf("option %s %q is not a valid Datera volume name (want ^[a-zA-Z_][a-zA-Z0-9_.-]{2,63}$)", OptVolumeID, clip(id))
	}
	return nil
}

// ValidateMountDir checks the pod volume directory kubelet passes: absolute, clean, and not the
// root directory.
func ValidateMountDir(dir string) error {
	switch {
	case dir == "":
		return fmt.Errorf("mount directory is empty")
	case !filepath.IsAbs(dir):
		return fmt.Errorf("mount directory %q is not absolute", clip(dir))
	case filepath.Clean(dir) != dir:
		return fmt.Errorf("mount directory %q is not clean (want %q)", clip(dir), clip(filepath.Clean(dir)))
	case dir == "/":
		return fmt.Errorf("mount directory is /")
	case len(dir) > 4000 || strings.ContainsAny(dir, "\x00\n\r"):
		return fmt.Errorf("mount directory %q is too long or holds control characters", clip(dir))
	}
	return nil
}

// ParseMountRequest validates the arguments of `mount <dir> <json>`. defaultFSType applies when
// kubelet sends no fsType.
func ParseMountRequest(dir, optsJSON, defaultFSType string) (*MountRequest, error) {
	if err := ValidateMountDir(dir); err != nil {
		return nil, err
	}
	var opts map[string]string
	dec := json.NewDecoder(strings.NewReader(optsJSON))
	if err := dec.Decode(&opts); err != nil {
		return nil, fmt.Errorf("malformed options JSON (want an object of strings): %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("malformed options JSON: trailing data after the object")
	}
	if opts == nil {
		return nil, fmt.Errorf("malformed options JSON: null")
	}
	r := &MountRequest{Dir: dir, Secrets: map[string]string{}}
	if err := r.fromOptions(opts, defaultFSType); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *MountRequest) fromOptions(opts map[string]string, defaultFSType string) error {
	r.VolumeID = opts[OptVolumeID]
	if r.VolumeID == "" {
		return fmt.Errorf("option %s is required", OptVolumeID)
	}
	if err := ValidateVolumeID(r.VolumeID); err != nil {
		return err
	}
	v := datera.CreateVolumeRequest{Name: r.VolumeID, Template: opts[OptTemplate],
		IPPool: opts[OptIPPool], PlacementMode: datera.PlacementMode(opts[OptPlacementMode]),
		Description: "petfabric FlexVolume " + opts[KeyPVName]}
	if v.Template != "" {
		if err := datera.ValidateName("template", v.Template); err != nil {
			return fmt.Errorf("option %s: %w", OptTemplate, err)
		}
	}
	var err error
	if v.SizeGiB, err = parseInt(opts, OptSize, datera.MinSizeGiB, datera.MaxSizeGiB); err != nil {
		return err
	}
	if v.SizeGiB == 0 && v.Template == "" {
		return fmt.Errorf("option %s is required (GiB, %d-%d) unless %s is set", OptSize, datera.MinSizeGiB, datera.MaxSizeGiB, OptTemplate)
	}
	replica, err := parseInt(opts, OptReplica, datera.MinReplicaCount, datera.MaxReplicaCount)
	if err != nil {
		return err
	}
	v.ReplicaCount = int(replica)
	switch v.PlacementMode {
	case "", datera.PlacementHybrid, datera.PlacementSingleFlash, datera.PlacementAllFlash:
	default:
		return fmt.Errorf("option %s %q: want hybrid, single_flash or all_flash", OptPlacementMode, clip(string(v.PlacementMode)))
	}
	if v.IPPool != "" {
		if err := datera.ValidateName("ip_pool", v.IPPool); err != nil {
			return fmt.Errorf("option %s: %w", OptIPPool, err)
		}
	}
	r.Volume = v
	if r.MaxIOPS, err = parseInt(opts, OptMaxIOPS, 0, datera.MaxIOPS); err != nil {
		return err
	}
	if r.MaxBWKiB, err = parseInt(opts, OptMaxBW, 0, datera.MaxBandwidthKiB); err != nil {
		return err
	}
	if err := r.parseBackstore(opts); err != nil {
		return err
	}
	if err := r.parseKubelet(opts, defaultFSType); err != nil {
		return err
	}
	if err := r.parseContractV2(opts); err != nil {
		return err
	}
	return r.parseSecrets(opts)
}

// parseContractV2 reads the access mode and the owner. A ReadOnlyMany volume is always mounted
// read-only, whatever kubelet asks: several nodes mount it at once, and a local filesystem
// written by one node while another has it mounted is corrupted for the reader (refusing the
// mount instead would break pods that only read but did not declare readOnly; a pod that writes
// gets EROFS, which names the problem).
func (r *MountRequest) parseContractV2(opts map[string]string) error {
	mode, err := pvoptions.ParseAccessMode(opts[pvoptions.OptAccessMode])
	if err != nil {
		return err
	}
	r.AccessMode = mode
	if mode == pvoptions.AccessReadOnlyMany && !r.ReadOnly {
		r.ReadOnly, r.AskedRW = true, true
	}
	r.Owner, r.HasOwner = pvoptions.OwnerFromOptions(opts)
	if !r.HasOwner {
		var present []string
		for _, k := range []string{pvoptions.OptClusterID, pvoptions.OptClaimNamespace, pvoptions.OptClaimName, pvoptions.OptNamespaceUID} {
			if opts[k] != "" {
				present = append(present, k)
			}
		}
		if len(present) > 0 {
			return fmt.Errorf("options %s, %s and %s come together (the PV's owner); this volume has only %s",
				pvoptions.OptClaimNamespace, pvoptions.OptClaimName, pvoptions.OptNamespaceUID, strings.Join(present, ", "))
		}
	}
	return nil
}

func (r *MountRequest) parseBackstore(opts map[string]string) error {
	r.BackstoreServer = opts[OptBackstoreServer]
	if r.BackstoreServer == "" {
		return fmt.Errorf("option %s is required (host:port of the Datera management API)", OptBackstoreServer)
	}
	ep, err := datera.EndpointForBackstore(r.BackstoreServer)
	if err != nil {
		return fmt.Errorf("option %s: %w", OptBackstoreServer, err)
	}
	r.Endpoint = ep
	tenant := opts[OptTenant]
	if tenant != "" {
		norm := datera.NormalizeTenant(tenant)
		for _, seg := range strings.Split(strings.TrimPrefix(norm, "/root"), "/")[1:] {
			if !volumeIDRE.MatchString(seg) {
				return fmt.Errorf("option %s %q is not a valid tenant path", OptTenant, clip(tenant))
			}
		}
		r.Tenant = norm
	}
	return nil
}

func (r *MountRequest) parseKubelet(opts map[string]string, defaultFSType string) error {
	r.FSType = opts[KeyFSType]
	if r.FSType == "" {
		r.FSType = defaultFSType
	}
	if !slices.Contains(supportedFSTypes, r.FSType) {
		return fmt.Errorf("fsType %q is not supported (want one of %s)", clip(r.FSType), strings.Join(supportedFSTypes, ", "))
	}
	switch opts[KeyReadWrite] {
	case "", "rw":
	case "ro":
		r.ReadOnly = true
	default:
		return fmt.Errorf("%s %q: want rw or ro", KeyReadWrite, clip(opts[KeyReadWrite]))
	}
	r.PVName = opts[KeyPVName]
	if ns, name := opts[KeyPodNS], opts[KeyPodName]; name != "" {
		r.Pod = ns + "/" + name
	}
	for k := range opts {
		if !strings.HasPrefix(k, "kubernetes.io/") && !slices.Contains(knownOptions, k) {
			r.Ignored = append(r.Ignored, k)
		}
	}
	slices.Sort(r.Ignored)
	return nil
}

// parseSecrets decodes kubernetes.io/secret/<key> values (base64 of the raw bytes). Error
// messages name the key, never the value.
func (r *MountRequest) parseSecrets(opts map[string]string) error {
	for k, v := range opts {
		key, ok := strings.CutPrefix(k, KeySecretPrefix)
		if !ok {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return fmt.Errorf("secret key %q is not base64 as kubelet encodes it", clip(key))
		}
		r.Secrets[key] = string(b)
	}
	return nil
}

// parseInt reads an optional integer option; absent means 0.
func parseInt(opts map[string]string, key string, lo, hi int64) (int64, error) {
	s, ok := opts[key]
	if !ok || s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("option %s %q: want an integer in %d-%d", key, clip(s), lo, hi)
	}
	return n, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
