package fake

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// tenant holds everything scoped to one tenant path.
type tenant struct {
	path         string
	appInstances map[string]*appInstance // by id
	byName       map[string]string       // app_instance name → id
	order        []string                // ids in creation order
	initiators   map[string]*initiator   // by IQN
	templates    map[string]*appTemplate // by name
}

func newTenant(path string) *tenant {
	return &tenant{path: path, appInstances: map[string]*appInstance{}, byName: map[string]string{},
		initiators: map[string]*initiator{}, templates: map[string]*appTemplate{}}
}

// lookupAI resolves the ":id" URL slot, which takes the id or, for compatibility, the name.
func (t *tenant) lookupAI(idOrName string) *appInstance {
	if ai, ok := t.appInstances[idOrName]; ok {
		return ai
	}
	return t.appInstances[t.byName[idOrName]]
}

func (t *tenant) addAI(ai *appInstance) {
	t.appInstances[ai.id] = ai
	t.byName[ai.name] = ai.id
	t.order = append(t.order, ai.id)
}

func (t *tenant) renameAI(ai *appInstance, name string) {
	delete(t.byName, ai.name)
	ai.name = name
	t.byName[name] = ai.id
}

func (t *tenant) removeAI(ai *appInstance) {
	delete(t.appInstances, ai.id)
	delete(t.byName, ai.name)
	if i := slices.Index(t.order, ai.id); i >= 0 {
		t.order = slices.Delete(t.order, i, i+1)
	}
}

type appInstance struct {
	id, name, descr, createMode, uuid string
	tenant                            string
	adminState                        string
	accessControlMode                 string
	templatePath                      string
	storage                           []*storageInstance
	metadata                          map[string]string
}

func (ai *appInstance) path() string { return "/app_instances/" + ai.id }

func (ai *appInstance) si(name string) *storageInstance {
	for _, si := range ai.storage {
		if si.name == name {
			return si
		}
	}
	return nil
}

type storageInstance struct {
	name, uuid, iqn   string
	adminState        string
	availableAt       time.Time // when an online target's op_state turns "available"
	accessControlMode string
	ipPool            string
	acl               []string // initiator paths, in grant order
	aclGroups         []string
	auth              authSettings
	activeInitiators  []string
	volumes           []*volume
}

func (si *storageInstance) available(now time.Time) bool {
	return si.adminState == "online" && !now.Before(si.availableAt)
}

func (si *storageInstance) vol(name string) *volume {
	for _, v := range si.volumes {
		if v.name == name {
			return v
		}
	}
	return nil
}

func (si *storageInstance) aclIndex(path string) int {
	for i, p := range si.acl {
		if p == path {
			return i
		}
	}
	return -1
}

type authSettings struct {
	typ                         string
	initiatorUser, initiatorPwd string
	targetUser, targetPwd       string
}

type volume struct {
	name, uuid    string
	size          int64
	replicaCount  int
	placementMode string
	perf          *perfPolicy
}

type perfPolicy struct {
	TotalIOPSMax      int64 `json:"total_iops_max"`
	ReadIOPSMax       int64 `json:"read_iops_max"`
	WriteIOPSMax      int64 `json:"write_iops_max"`
	TotalBandwidthMax int64 `json:"total_bandwidth_max"`
	ReadBandwidthMax  int64 `json:"read_bandwidth_max"`
	WriteBandwidthMax int64 `json:"write_bandwidth_max"`
}

type initiator struct {
	id, name, tenant string
}

func (in *initiator) path() string { return "/initiators/" + in.id }

type appTemplate struct {
	name, descr string
	storage     []storageTemplate
}

type storageTemplate struct {
	name    string
	ipPool  string
	volumes []volumeTemplate
}

type volumeTemplate struct {
	name          string
	size          int64
	replicaCount  int
	placementMode string
}

// ---- rendering (nested objects always present, every one with a path, as the API renders them)

func (s *Server) renderAI(ai *appInstance) map[string]any {
	sis := make([]any, 0, len(ai.storage))
	for _, si := range ai.storage {
		sis = append(sis, s.renderSI(ai, si))
	}
	tmpl := map[string]any{"path": "", "resolved_path": "", "resolved_tenant": ""}
	if ai.templatePath != "" {
		tmpl = map[string]any{"path": ai.templatePath, "resolved_path": ai.templatePath, "resolved_tenant": ai.tenant}
	}
	return map[string]any{
		"tenant":              ai.tenant,
		"path":                ai.path(),
		"name":                ai.name,
		"id":                  ai.id,
		"uuid":                ai.uuid,
		"descr":               ai.descr,
		"health":              "ok",
		"admin_state":         ai.adminState,
		"create_mode":         ai.createMode,
		"access_control_mode": ai.accessControlMode,
		"deployment_state":    "deployed",
		"op_state":            "",
		"app_template":        tmpl,
		"storage_instances":   sis,
		"snapshots":           []any{},
		"snapshot_policies":   []any{},
		"causes":              []any{},
		"clone_src":           map[string]any{},
		"restore_point":       "",
		"repair_priority":     "high",
	}
}

func (s *Server) siPath(ai *appInstance, si *storageInstance) string {
	return ai.path() + "/storage_instances/" + si.name
}

func (s *Server) renderSI(ai *appInstance, si *storageInstance) map[string]any {
	p := s.siPath(ai, si)
	vols := make([]any, 0, len(si.volumes))
	for _, v := range si.volumes {
		vols = append(vols, s.renderVolume(p, si, v))
	}
	opState := "unavailable"
	if si.available(s.now()) {
		opState = "available"
	}
	return map[string]any{
		"path":                 p,
		"name":                 si.name,
		"uuid":                 si.uuid,
		"health":               "ok",
		"causes":               []any{},
		"admin_state":          si.adminState,
		"op_state":             opState,
		"deployment_state":     "deployed",
		"access_control_mode":  si.accessControlMode,
		"access":               s.renderAccess(p, si),
		"acl_policy":           s.renderACL(ai.tenant, p, si),
		"ip_pool":              map[string]any{"path": "/access_network_ip_pools/" + si.ipPool, "resolved_path": "/access_network_ip_pools/" + si.ipPool, "resolved_tenant": "/root"},
		"auth":                 renderAuth(p, si.auth),
		"active_initiators":    nonNil(append([]string(nil), si.activeInitiators...)),
		"active_storage_nodes": []any{},
		"volumes":              vols,
	}
}

// renderAccess reports the portal IPs only once the target is available: clients must poll
// (Datera's Docker driver polls for the same reason: "No IPs available for volume").
func (s *Server) renderAccess(siPath string, si *storageInstance) map[string]any {
	ips := []string{}
	if si.available(s.now()) {
		ips = append(ips, s.opts.Portals...)
	}
	return map[string]any{"path": siPath + "/access", "iqn": si.iqn, "ips": ips}
}

// renderACL returns initiators with path, id, name and tenant, so a client that PUTs them back
// unfiltered trips the schema's additionalProperties:false.
func (s *Server) renderACL(tenantPath, siPath string, si *storageInstance) map[string]any {
	ins := make([]any, 0, len(si.acl))
	order := si.acl
	if s.opts.ACLNewestFirst {
		order = slices.Clone(si.acl)
		slices.Reverse(order)
	}
	for _, p := range order {
		entry := map[string]any{"path": p}
		if in := s.resolveInitiatorPath(tenantPath, p); in != nil {
			entry["id"], entry["name"], entry["tenant"] = in.id, in.name, in.tenant
		}
		ins = append(ins, entry)
	}
	groups := make([]any, 0, len(si.aclGroups))
	for _, p := range si.aclGroups {
		groups = append(groups, map[string]any{"path": p})
	}
	return map[string]any{"path": siPath + "/acl_policy", "initiators": ins, "initiator_groups": groups}
}

func renderAuth(siPath string, a authSettings) map[string]any {
	hidden := func(v string) string {
		if v == "" {
			return ""
		}
		return "(hidden)" // the API never reads passwords back
	}
	return map[string]any{
		"path": siPath + "/auth", "type": a.typ,
		"initiator_user_name": a.initiatorUser, "initiator_pswd": hidden(a.initiatorPwd),
		"target_user_name": a.targetUser, "target_pswd": hidden(a.targetPwd),
	}
}

func (s *Server) renderVolume(siPath string, si *storageInstance, v *volume) map[string]any {
	p := siPath + "/volumes/" + v.name
	opState := "unavailable"
	if si.available(s.now()) {
		opState = "available"
	}
	out := map[string]any{
		"path":                 p,
		"name":                 v.name,
		"uuid":                 v.uuid,
		"size":                 v.size,
		"replica_count":        v.replicaCount,
		"placement_mode":       v.placementMode,
		"capacity_in_use":      0,
		"op_state":             opState,
		"availability_state":   opState,
		"deployment_state":     "deployed",
		"health":               "ok",
		"causes":               []any{},
		"active_storage_nodes": []any{},
		"snapshots":            []any{},
		"snapshot_policies":    []any{},
		"restore_point":        "",
	}
	if v.perf != nil {
		out["performance_policy"] = renderPerf(p, v.perf)
	}
	return out
}

func renderPerf(volPath string, p *perfPolicy) map[string]any {
	return map[string]any{
		"path":           volPath + "/performance_policy",
		"total_iops_max": p.TotalIOPSMax, "read_iops_max": p.ReadIOPSMax, "write_iops_max": p.WriteIOPSMax,
		"total_bandwidth_max": p.TotalBandwidthMax, "read_bandwidth_max": p.ReadBandwidthMax, "write_bandwidth_max": p.WriteBandwidthMax,
	}
}

func (s *Server) renderInitiator(version string, in *initiator) map[string]any {
	out := map[string]any{"path": in.path(), "id": in.id, "name": in.name}
	if version != "v2.1" {
		out["tenant"] = in.tenant // tenant appears on 2.2
	}
	return out
}

func renderTemplate(t *appTemplate, users []*appInstance) map[string]any {
	p := "/app_templates/" + t.name
	sts := make([]any, 0, len(t.storage))
	for _, st := range t.storage {
		vts := make([]any, 0, len(st.volumes))
		for _, vt := range st.volumes {
			vts = append(vts, map[string]any{
				"path": p + "/storage_templates/" + st.name + "/volume_templates/" + vt.name,
				"name": vt.name, "size": vt.size, "replica_count": vt.replicaCount, "placement_mode": vt.placementMode,
			})
		}
		sts = append(sts, map[string]any{
			"path": p + "/storage_templates/" + st.name, "name": st.name,
			"volume_templates": vts, "ip_pool": "/access_network_ip_pools/" + st.ipPool,
			"auth": map[string]any{"type": "none"},
		})
	}
	ais := make([]any, 0, len(users))
	for _, ai := range users {
		ais = append(ais, map[string]any{"path": ai.path()})
	}
	return map[string]any{"path": p, "name": t.name, "descr": t.descr, "storage_templates": sts,
		"app_instances": ais, "snapshot_policies": []any{}}
}

// ---- identifiers

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]}, "-")
}

// newIQN follows Datera's target naming.
func newIQN() string { return fmt.Sprintf("iqn.2013-05.com.daterainc:tc:01:sn:%s", randomHex(8)) }
