package flex

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Keys kubelet adds to the PV's options (which are the contract of pkg/pvoptions).
const (
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

// ValidateVolumeID checks a volumeID option (pvoptions.ParseVolumeID).
func ValidateVolumeID(id string) error {
	_, err := pvoptions.ParseVolumeID(id)
	return err
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

// fromOptions reads the PV's options through the contract's one parser (pvoptions.Parse,
// which accepts contract versions 1 and 2), then the keys kubelet adds and the secrets.
func (r *MountRequest) fromOptions(opts map[string]string, defaultFSType string) error {
	pv, err := pvoptions.Parse(opts)
	if err != nil {
		return err
	}
	r.VolumeID = pv.VolumeID
	r.Volume = datera.CreateVolumeRequest{Name: pv.VolumeID, SizeGiB: pv.SizeGiB, ReplicaCount: pv.Replica,
		Template: pv.Template, IPPool: pv.IPPool, PlacementMode: datera.PlacementMode(pv.PlacementMode),
		Description: "petfabric FlexVolume " + opts[KeyPVName]}
	r.MaxIOPS, r.MaxBWKiB = pv.MaxIOPS, pv.MaxBWKiB
	r.BackstoreServer, r.Tenant = pv.BackstoreServer, pv.Tenant
	if r.Endpoint, err = pvoptions.ParseBackstoreServer(pv.BackstoreServer); err != nil {
		return err
	}
	if err := r.parseKubelet(opts, defaultFSType); err != nil {
		return err
	}
	// A ReadOnlyMany volume is always mounted read-only, whatever kubelet asks: several nodes
	// mount it at once, and a local filesystem written by one node while another has it
	// mounted is corrupted for the reader (refusing the mount instead would break pods that
	// only read but did not declare readOnly; a pod that writes gets EROFS, which names the
	// problem).
	r.AccessMode = pv.AccessMode
	if pv.AccessMode == pvoptions.AccessReadOnlyMany && !r.ReadOnly {
		r.ReadOnly, r.AskedRW = true, true
	}
	r.Owner, r.HasOwner = pv.Owner, pv.HasOwner
	return r.parseSecrets(opts)
}

func (r *MountRequest) parseKubelet(opts map[string]string, defaultFSType string) error {
	r.FSType = opts[KeyFSType]
	if r.FSType == "" {
		r.FSType = defaultFSType
	}
	if !pvoptions.ValidFSType(r.FSType) {
		return fmt.Errorf("fsType %q is not supported (want one of %s)", clip(r.FSType), strings.Join(pvoptions.FSTypes(), ", "))
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
		if !strings.HasPrefix(k, "kubernetes.io/") && !pvoptions.Known(k) {
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

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
