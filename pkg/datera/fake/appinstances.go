package fake

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Request bodies. Pointer fields tell "absent" from zero; unknown keys are rejected by decodeJSON
// (additionalProperties:false in every SCHEMA21 body).
type (
	pathRef struct {
		Path *string `json:"path"`
	}
	createAIBody struct {
		Name              *string           `json:"name"`
		Descr             *string           `json:"descr"`
		CreateMode        *string           `json:"create_mode"`
		UUID              *string           `json:"uuid"`
		AccessControlMode *string           `json:"access_control_mode"`
		StorageInstances  []createSIBody    `json:"storage_instances"`
		SnapshotPolicies  []json.RawMessage `json:"snapshot_policies"`
		AppTemplate       *pathRef          `json:"app_template"`
		CloneSrc          *pathRef          `json:"clone_src"`
		CloneVolumeSrc    *pathRef          `json:"clone_volume_src"`
		CloneSnapshotSrc  *pathRef          `json:"clone_snapshot_src"`
		TemplateOverride  *templateOverride `json:"template_override"` // v2.2 (product 3.3+)
		RepairPriority    *string           `json:"repair_priority"`   // v2.2
	}
	createSIBody struct {
		Name              *string         `json:"name"`
		AdminState        *string         `json:"admin_state"`
		Volumes           []createVolBody `json:"volumes"`
		AccessControlMode *string         `json:"access_control_mode"`
		ACLPolicy         *aclBody        `json:"acl_policy"`
		IPPool            *pathRef        `json:"ip_pool"`
		Access            *struct{}       `json:"access"`
		Auth              *authBody       `json:"auth"`
	}
	createVolBody struct {
		Name              *string           `json:"name"`
		Size              *int64            `json:"size"`
		ReplicaCount      *int64            `json:"replica_count"`
		PlacementMode     *string           `json:"placement_mode"`
		SnapshotPolicies  []json.RawMessage `json:"snapshot_policies"`
		PerformancePolicy *perfBody         `json:"performance_policy"`
		PlacementPolicy   *pathRef          `json:"placement_policy"` // v2.2 (product 3.3+)
	}
	aclBody struct {
		Initiators      []pathRef `json:"initiators"`
		InitiatorGroups []pathRef `json:"initiator_groups"`
	}
	authBody struct {
		Type              *string `json:"type"`
		InitiatorUserName *string `json:"initiator_user_name"`
		InitiatorPswd     *string `json:"initiator_pswd"`
		TargetUserName    *string `json:"target_user_name"`
		TargetPswd        *string `json:"target_pswd"`
	}
	// templateOverride is keyed by names and carries sizes as strings, as the API takes them.
	templateOverride struct {
		StorageInstances map[string]struct {
			Volumes map[string]struct {
				Size *string `json:"size"`
			} `json:"volumes"`
		} `json:"storage_instances"`
	}
	updateAIBody struct {
		Name           *string `json:"name"`
		Descr          *string `json:"descr"`
		AdminState     *string `json:"admin_state"`
		Provisioned    *bool   `json:"provisioned"`
		Force          *bool   `json:"force"`
		RepairPriority *string `json:"repair_priority"`
	}
	deleteBody struct {
		Force *bool `json:"force"`
	}
)

// v22Only rejects, on v2.1, keys that only the 2.2 schema knows.
func v22Only(c *call, present map[string]bool) *apiError {
	if c.version != "v2.1" {
		return nil
	}
	for k, p := range present {
		if p {
			return validationFailed(fmt.Sprintf("additional property %q is not allowed", k))
		}
	}
	return nil
}

func (s *Server) listAppInstances(c *call) result {
	items := make([]any, 0, len(c.t.order))
	for _, id := range c.t.order {
		items = append(items, s.renderAI(c.t.appInstances[id]))
	}
	return list(c, "/app_instances", items)
}

func (s *Server) lookupAI(c *call) (*appInstance, *apiError) {
	key := c.r.PathValue("ai")
	ai := c.t.lookupAI(key)
	if ai == nil {
		return nil, notFound("app_instance %s does not exist", key)
	}
	return ai, nil
}

func (s *Server) getAppInstance(c *call) result {
	ai, err := s.lookupAI(c)
	if err != nil {
		return fail(err)
	}
	return ok(ai.path(), s.renderAI(ai))
}

func (s *Server) createAppInstance(c *call) result {
	var b createAIBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	if err := v22Only(c, map[string]bool{"template_override": b.TemplateOverride != nil, "repair_priority": b.RepairPriority != nil}); err != nil {
		return fail(err)
	}
	var v checks
	v.required("name", b.Name != nil)
	if b.Name != nil {
		v.appInstanceName("name", *b.Name)
	}
	createMode := "normal"
	if b.CreateMode != nil {
		v.enum("create_mode", *b.CreateMode, createModes)
		createMode = *b.CreateMode
	}
	acm := "deny_all"
	if b.AccessControlMode != nil {
		v.enum("access_control_mode", *b.AccessControlMode, aclModes)
		acm = *b.AccessControlMode
	}
	if b.UUID != nil {
		v.pattern("uuid", *b.UUID, reUUID)
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	if len(b.SnapshotPolicies) > 0 {
		return fail(invalidRequest("snapshot_policies are not supported by this simulator"))
	}
	if b.CloneSrc != nil || b.CloneVolumeSrc != nil || b.CloneSnapshotSrc != nil {
		return fail(invalidRequest("cloning is not supported by this simulator"))
	}
	if b.AppTemplate != nil && len(b.StorageInstances) > 0 {
		return fail(invalidRequest("app_template and storage_instances are mutually exclusive"))
	}
	if b.TemplateOverride != nil && b.AppTemplate == nil {
		return fail(invalidRequest("template_override needs app_template"))
	}
	if c.t.lookupAI(*b.Name) != nil {
		return fail(conflict("app_instance %s already exists", *b.Name))
	}

	ai := &appInstance{
		id: newUUID(), name: *b.Name, createMode: createMode, tenant: c.t.path,
		adminState: "offline", accessControlMode: acm, uuid: "00000000-0000-0000-0000-000000000000",
		metadata: map[string]string{},
	}
	if b.Descr != nil {
		ai.descr = *b.Descr
	}
	if b.UUID != nil {
		ai.uuid = *b.UUID
	}
	if b.AppTemplate != nil {
		if err := s.instantiateTemplate(c, ai, b.AppTemplate, b.TemplateOverride); err != nil {
			return fail(err)
		}
	} else {
		seen := map[string]bool{}
		for i, sb := range b.StorageInstances {
			si, err := s.buildSI(c, fmt.Sprintf("storage_instances[%d]", i), sb, acm)
			if err != nil {
				return fail(err)
			}
			if seen[si.name] {
				return fail(invalidRequest("duplicate storage_instance name %s", si.name))
			}
			seen[si.name] = true
			ai.storage = append(ai.storage, si)
		}
	}
	// A storage_instance created online is exported at once.
	var exported []*storageInstance
	for _, si := range ai.storage {
		if si.adminState != "online" {
			continue
		}
		si.adminState = "offline"
		if err := s.setSIState(c, ai, si, "online", false); err != nil {
			for _, done := range exported {
				_ = s.setSIState(c, ai, done, "offline", true)
			}
			return fail(err)
		}
		exported = append(exported, si)
		ai.adminState = "online"
	}
	c.t.addAI(ai)
	return ok(ai.path(), s.renderAI(ai))
}

func (s *Server) buildSI(c *call, field string, b createSIBody, acm string) (*storageInstance, *apiError) {
	var v checks
	v.required(field+".name", b.Name != nil)
	if b.Name != nil {
		v.pattern(field+".name", *b.Name, reName)
	}
	si := &storageInstance{uuid: newUUID(), iqn: newIQN(), adminState: "offline", accessControlMode: acm, ipPool: "default",
		auth: authSettings{typ: "none"}}
	if b.AdminState != nil {
		v.enum(field+".admin_state", *b.AdminState, adminStates)
		si.adminState = *b.AdminState
	}
	if b.AccessControlMode != nil {
		v.enum(field+".access_control_mode", *b.AccessControlMode, aclModes)
		si.accessControlMode = *b.AccessControlMode
	}
	if b.Auth != nil {
		v.authBody(field+".auth", b.Auth, true)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	si.name = *b.Name
	if b.IPPool != nil {
		pool, err := s.poolFromPath(b.IPPool)
		if err != nil {
			return nil, err
		}
		si.ipPool = pool
	}
	if b.Auth != nil {
		si.auth = applyAuth(authSettings{}, b.Auth)
	}
	if b.ACLPolicy != nil {
		acl, groups, err := s.resolveACL(c, b.ACLPolicy)
		if err != nil {
			return nil, err
		}
		si.acl, si.aclGroups = acl, groups
	}
	seen := map[string]bool{}
	for i, vb := range b.Volumes {
		vol, err := s.buildVolume(c, fmt.Sprintf("%s.volumes[%d]", field, i), vb)
		if err != nil {
			return nil, err
		}
		if seen[vol.name] {
			return nil, invalidRequest("duplicate volume name %s", vol.name)
		}
		seen[vol.name] = true
		si.volumes = append(si.volumes, vol)
	}
	return si, nil
}

func (s *Server) buildVolume(c *call, field string, b createVolBody) (*volume, *apiError) {
	if err := v22Only(c, map[string]bool{field + ".placement_policy": b.PlacementPolicy != nil}); err != nil {
		return nil, err
	}
	var v checks
	v.required(field+".name", b.Name != nil)
	v.required(field+".size", b.Size != nil)
	vol := &volume{uuid: newUUID(), replicaCount: 3, placementMode: "hybrid"}
	if b.Name != nil {
		v.pattern(field+".name", *b.Name, reName)
		vol.name = *b.Name
	}
	if b.Size != nil {
		v.rangeInt(field+".size", *b.Size, minSize, maxSize)
		vol.size = *b.Size
	}
	if b.ReplicaCount != nil {
		v.rangeInt(field+".replica_count", *b.ReplicaCount, minReplica, maxReplica)
		vol.replicaCount = int(*b.ReplicaCount)
	}
	if b.PlacementMode != nil {
		v.enum(field+".placement_mode", *b.PlacementMode, placementModes)
		vol.placementMode = *b.PlacementMode
	}
	if b.PerformancePolicy != nil {
		v.perf(field+".performance_policy", b.PerformancePolicy)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if len(b.SnapshotPolicies) > 0 {
		return nil, invalidRequest("snapshot_policies are not supported by this simulator")
	}
	if b.PlacementPolicy != nil && (b.PlacementPolicy.Path == nil || !strings.HasPrefix(*b.PlacementPolicy.Path, "/placement_policies/")) {
		return nil, notFound("placement_policy %v does not exist", b.PlacementPolicy.Path)
	}
	if b.PerformancePolicy != nil {
		vol.perf = &perfPolicy{}
		applyPerf(vol.perf, b.PerformancePolicy)
	}
	return vol, nil
}

func (s *Server) poolFromPath(ref *pathRef) (string, *apiError) {
	if ref.Path == nil {
		return "", validationFailed("ip_pool.path is required")
	}
	name, found := strings.CutPrefix(*ref.Path, "/access_network_ip_pools/")
	if !found || !s.pools[name] {
		return "", notFound("access_network_ip_pool %s does not exist", *ref.Path)
	}
	return name, nil
}

func (s *Server) instantiateTemplate(c *call, ai *appInstance, ref *pathRef, override *templateOverride) *apiError {
	if ref.Path == nil {
		return validationFailed("app_template.path is required")
	}
	name, found := strings.CutPrefix(*ref.Path, "/app_templates/")
	t := s.findTemplate(c.t.path, name)
	if !found || t == nil {
		return notFound("app_template %s does not exist", *ref.Path)
	}
	ai.templatePath = "/app_templates/" + t.name
	sizes := map[[2]string]int64{}
	if override != nil {
		for siName, so := range override.StorageInstances {
			for volName, vo := range so.Volumes {
				if vo.Size == nil {
					continue
				}
				n, err := strconv.ParseInt(*vo.Size, 10, 64)
				if err != nil {
					return validationFailed(fmt.Sprintf("template_override %s/%s size: %q is not an integer string", siName, volName, *vo.Size))
				}
				var v checks
				v.rangeInt("template_override size", n, minSize, maxSize)
				if err := v.err(); err != nil {
					return err
				}
				sizes[[2]string{siName, volName}] = n
			}
		}
	}
	used := 0
	for _, st := range t.storage {
		si := &storageInstance{name: st.name, uuid: newUUID(), iqn: newIQN(), adminState: "offline",
			accessControlMode: ai.accessControlMode, ipPool: st.ipPool, auth: authSettings{typ: "none"}}
		for _, vt := range st.volumes {
			vol := &volume{name: vt.name, uuid: newUUID(), size: vt.size, replicaCount: vt.replicaCount, placementMode: vt.placementMode}
			if n, ok := sizes[[2]string{st.name, vt.name}]; ok {
				vol.size = n
				used++
			}
			si.volumes = append(si.volumes, vol)
		}
		ai.storage = append(ai.storage, si)
	}
	if used != len(sizes) {
		return invalidRequest("template_override names a storage_instance or volume that app_template %s does not have", t.name)
	}
	return nil
}

func (s *Server) updateAppInstance(c *call) result {
	ai, aerr := s.lookupAI(c)
	if aerr != nil {
		return fail(aerr)
	}
	var b updateAIBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	if err := v22Only(c, map[string]bool{"repair_priority": b.RepairPriority != nil}); err != nil {
		return fail(err)
	}
	var v checks
	if b.Name != nil {
		v.appInstanceName("name", *b.Name)
	}
	if b.AdminState != nil {
		v.enum("admin_state", *b.AdminState, adminStates)
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	if b.Name != nil && *b.Name != ai.name {
		if c.t.lookupAI(*b.Name) != nil {
			return fail(conflict("app_instance %s already exists", *b.Name))
		}
	}
	force := b.Force != nil && *b.Force
	if b.AdminState != nil {
		if err := s.setAIState(c, ai, *b.AdminState, force); err != nil {
			return fail(err)
		}
	}
	if b.Name != nil {
		c.t.renameAI(ai, *b.Name)
	}
	if b.Descr != nil {
		ai.descr = *b.Descr
	}
	return ok(ai.path(), s.renderAI(ai))
}

// setAIState moves every storage_instance, all or nothing.
func (s *Server) setAIState(c *call, ai *appInstance, state string, force bool) *apiError {
	if state == "offline" && !force && !s.opts.AllowOfflineWithSessions {
		for _, si := range ai.storage {
			if si.adminState == "online" && len(si.activeInitiators) > 0 {
				return invalidRequest("storage_instance %s of app_instance %s has active initiators %v; use force to override this warning",
					si.name, ai.name, si.activeInitiators)
			}
		}
	}
	prev := map[*storageInstance]string{}
	for _, si := range ai.storage {
		prev[si] = si.adminState
		if err := s.setSIState(c, ai, si, state, true); err != nil {
			for done, was := range prev {
				if done != si {
					_ = s.setSIState(c, ai, done, was, true)
				}
			}
			return err
		}
	}
	ai.adminState = state
	return nil
}

// setSIState moves one storage_instance and its iSCSI export (real iSCSI mode).
func (s *Server) setSIState(c *call, ai *appInstance, si *storageInstance, state string, force bool) *apiError {
	if si.adminState == state {
		return nil
	}
	switch state {
	case "online":
		if err := s.export(c, ai, si); err != nil {
			return err
		}
		si.adminState = "online"
		si.availableAt = s.now().Add(s.opts.OnlineDelay)
	case "offline":
		if len(si.activeInitiators) > 0 && !force && !s.opts.AllowOfflineWithSessions {
			return invalidRequest("storage_instance %s has active initiators %v; use force to override this warning", si.name, si.activeInitiators)
		}
		if err := s.unexport(c, si); err != nil {
			return err
		}
		si.adminState = "offline"
		si.activeInitiators = nil // forced offline logs the sessions out
	}
	return nil
}

func (s *Server) deleteAppInstance(c *call) result {
	ai, aerr := s.lookupAI(c)
	if aerr != nil {
		return fail(aerr)
	}
	var b deleteBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	for _, si := range ai.storage {
		if si.adminState == "online" {
			// Strict on purpose: every Datera integration sets admin_state offline before deleting.
			return fail(invalidRequest("app_instance %s is online; set admin_state offline before deleting it", ai.name))
		}
	}
	rendered := s.renderAI(ai)
	c.t.removeAI(ai)
	s.destroyBacking(c, ai)
	return ok(ai.path(), rendered)
}

func (s *Server) getMetadata(c *call) result {
	ai, err := s.lookupAI(c)
	if err != nil {
		return fail(err)
	}
	return ok(ai.path()+"/metadata", copyMeta(ai.metadata))
}

// putMetadata merges string values (merging serves both the Cinder and the CSI driver's use).
func (s *Server) putMetadata(c *call) result {
	ai, aerr := s.lookupAI(c)
	if aerr != nil {
		return fail(aerr)
	}
	var b map[string]any
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	var v checks
	for k, val := range b {
		if _, isString := val.(string); !isString {
			v = append(v, fmt.Sprintf("metadata %q: value must be a string", k))
		}
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	for k, val := range b {
		ai.metadata[k] = val.(string)
	}
	return ok(ai.path()+"/metadata", copyMeta(ai.metadata))
}

func copyMeta(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
