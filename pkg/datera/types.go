package datera

import (
	"net"
	"strconv"
	"strings"
)

// Names every Datera driver uses for the single storage instance (the iSCSI target) and volume
// (its LUN 0) of an app instance.
const (
	StorageInstanceName = "storage-1"
	VolumeName          = "volume-1"
)

// ISCSIPort is the port of a portal IP that carries none.
const ISCSIPort = 3260

// AdminState of an app_instance or storage_instance.
type AdminState string

// Admin states.
const (
	Online  AdminState = "online"
	Offline AdminState = "offline"
)

// PlacementMode of a volume's replicas.
type PlacementMode string

// Placement modes.
const (
	PlacementHybrid      PlacementMode = "hybrid"
	PlacementSingleFlash PlacementMode = "single_flash"
	PlacementAllFlash    PlacementMode = "all_flash"
)

// OpStateAvailable is the storage_instance op_state of a usable target.
const OpStateAvailable = "available"

// AppInstance is a Datera app_instance: the unit a driver calls a volume.
type AppInstance struct {
	ID                string            `json:"id"`
	Name              string            `json:"name"`
	Path              string            `json:"path"`
	Tenant            string            `json:"tenant"`
	Descr             string            `json:"descr"`
	AdminState        AdminState        `json:"admin_state"`
	Health            string            `json:"health"`
	CreateMode        string            `json:"create_mode"`
	AccessControlMode string            `json:"access_control_mode"`
	DeploymentState   string            `json:"deployment_state"`
	AppTemplate       TemplateRef       `json:"app_template"`
	StorageInstances  []StorageInstance `json:"storage_instances"`
}

// TemplateRef names the app_template an app_instance came from (empty paths when none).
type TemplateRef struct {
	Path           string `json:"path"`
	ResolvedPath   string `json:"resolved_path"`
	ResolvedTenant string `json:"resolved_tenant"`
}

// StorageInstance is an iSCSI target of an app_instance.
type StorageInstance struct {
	Name              string     `json:"name"`
	Path              string     `json:"path"`
	UUID              string     `json:"uuid"`
	AdminState        AdminState `json:"admin_state"`
	OpState           string     `json:"op_state"`
	DeploymentState   string     `json:"deployment_state"`
	AccessControlMode string     `json:"access_control_mode"`
	Access            Access     `json:"access"`
	ACLPolicy         ACLPolicy  `json:"acl_policy"`
	IPPool            PathRef    `json:"ip_pool"`
	ActiveInitiators  []string   `json:"active_initiators"`
	Volumes           []Volume   `json:"volumes"`
}

// Volume is the LUN of a storage_instance.
type Volume struct {
	Name              string             `json:"name"`
	Path              string             `json:"path"`
	UUID              string             `json:"uuid"`
	Size              int64              `json:"size"`
	ReplicaCount      int                `json:"replica_count"`
	PlacementMode     PlacementMode      `json:"placement_mode"`
	OpState           string             `json:"op_state"`
	PerformancePolicy *PerformancePolicy `json:"performance_policy,omitempty"`
}

// Access is where a storage_instance is reachable: its target IQN and portal IPs.
type Access struct {
	Path string   `json:"path"`
	IQN  string   `json:"iqn"`
	IPs  []string `json:"ips"`
}

// Portals returns the portals as host:port, adding the iSCSI port 3260 to bare IPs.
// (A simulator whose target listens elsewhere reports ip:port, which is kept as is.)
func (a Access) Portals() []string {
	out := make([]string, 0, len(a.IPs))
	for _, ip := range a.IPs {
		ip = strings.TrimSpace(ip)
		if ip == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(ip); err == nil {
			out = append(out, ip)
			continue
		}
		out = append(out, net.JoinHostPort(strings.Trim(ip, "[]"), strconv.Itoa(ISCSIPort)))
	}
	return out
}

// ACLPolicy lists who may log in to a storage_instance.
type ACLPolicy struct {
	Path            string    `json:"path"`
	Initiators      []PathRef `json:"initiators"`
	InitiatorGroups []PathRef `json:"initiator_groups"`
}

// HasInitiator reports whether the IQN is in the ACL.
func (p ACLPolicy) HasInitiator(iqn string) bool {
	want := initiatorPath(iqn)
	for _, r := range p.Initiators {
		if r.Path == want {
			return true
		}
	}
	return false
}

// PathRef references another entity by path. GETs may add the referenced entity's fields.
type PathRef struct {
	Path   string `json:"path"`
	Name   string `json:"name,omitempty"`
	ID     string `json:"id,omitempty"`
	Tenant string `json:"tenant,omitempty"`
}

// Initiator is a host's iSCSI initiator registered with Datera.
type Initiator struct {
	Path   string `json:"path"`
	ID     string `json:"id"`
	Name   string `json:"name"`
	Tenant string `json:"tenant"`
}

// PerformancePolicy limits a volume. 0 means unlimited; bandwidths are KiB/s.
type PerformancePolicy struct {
	Path              string `json:"path,omitempty"`
	TotalIOPSMax      int64  `json:"total_iops_max"`
	ReadIOPSMax       int64  `json:"read_iops_max"`
	WriteIOPSMax      int64  `json:"write_iops_max"`
	TotalBandwidthMax int64  `json:"total_bandwidth_max"`
	ReadBandwidthMax  int64  `json:"read_bandwidth_max"`
	WriteBandwidthMax int64  `json:"write_bandwidth_max"`
}

// AppTemplate is a Datera app_template (only what instantiation needs).
type AppTemplate struct {
	Path             string            `json:"path"`
	Name             string            `json:"name"`
	StorageTemplates []StorageTemplate `json:"storage_templates"`
}

// StorageTemplate is the storage_instance part of an app_template.
type StorageTemplate struct {
	Name            string           `json:"name"`
	VolumeTemplates []VolumeTemplate `json:"volume_templates"`
}

// VolumeTemplate is the volume part of an app_template.
type VolumeTemplate struct {
	Name          string        `json:"name"`
	Size          int64         `json:"size"`
	ReplicaCount  int           `json:"replica_count"`
	PlacementMode PlacementMode `json:"placement_mode"`
}

// StorageInstance returns the named storage_instance, or the first one when name is "".
func (ai *AppInstance) StorageInstance(name string) (*StorageInstance, bool) {
	for i := range ai.StorageInstances {
		if name == "" || ai.StorageInstances[i].Name == name {
			return &ai.StorageInstances[i], true
		}
	}
	return nil, false
}

// Volume returns the volume a driver uses: storage-1/volume-1, or else the first volume of the
// first storage_instance (template-made app_instances may use other names).
func (ai *AppInstance) Volume() (*StorageInstance, *Volume, bool) {
	si, ok := ai.StorageInstance(StorageInstanceName)
	if !ok {
		si, ok = ai.StorageInstance("")
	}
	if !ok {
		return nil, nil, false
	}
	for i := range si.Volumes {
		if si.Volumes[i].Name == VolumeName {
			return si, &si.Volumes[i], true
		}
	}
	if len(si.Volumes) > 0 {
		return si, &si.Volumes[0], true
	}
	return si, nil, false
}

// SizeGiB returns the size of the driver's volume, or 0 when it has none.
func (ai *AppInstance) SizeGiB() int64 {
	if _, v, ok := ai.Volume(); ok {
		return v.Size
	}
	return 0
}
