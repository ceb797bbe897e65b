package fake

import (
	"fmt"
	"slices"
)

type (
	updateSIBody struct {
		AdminState        *string   `json:"admin_state"`
		Auth              *authBody `json:"auth"`
		ACLPolicy         *aclBody  `json:"acl_policy"`
		AccessControlMode *string   `json:"access_control_mode"`
		IPPool            *pathRef  `json:"ip_pool"`
		Force             *bool     `json:"force"`
	}
	aclOpBody struct {
		Op   *string `json:"op"`
		Path *string `json:"path"`
	}
	updateVolBody struct {
		Size          *int64  `json:"size"`
		ReplicaCount  *int64  `json:"replica_count"`
		PlacementMode *string `json:"placement_mode"`
		RestorePoint  *string `json:"restore_point"`
	}
	perfBody struct {
		TotalIOPSMax      *int64 `json:"total_iops_max"`
		ReadIOPSMax       *int64 `json:"read_iops_max"`
		WriteIOPSMax      *int64 `json:"write_iops_max"`
		TotalBandwidthMax *int64 `json:"total_bandwidth_max"`
		ReadBandwidthMax  *int64 `json:"read_bandwidth_max"`
		WriteBandwidthMax *int64 `json:"write_bandwidth_max"`
	}
)

func (s *Server) lookupSI(c *call) (*appInstance, *storageInstance, *apiError) {
	ai, err := s.lookupAI(c)
	if err != nil {
		return nil, nil, err
	}
	name := c.r.PathValue("si")
	si := ai.si(name)
	if si == nil {
		return nil, nil, notFound("storage_instance %s of app_instance %s does not exist", name, ai.name)
	}
	return ai, si, nil
}

func (s *Server) lookupVolume(c *call) (*appInstance, *storageInstance, *volume, *apiError) {
	ai, si, err := s.lookupSI(c)
	if err != nil {
		return nil, nil, nil, err
	}
	name := c.r.PathValue("vol")
	v := si.vol(name)
	if v == nil {
		return nil, nil, nil, notFound("volume %s of storage_instance %s does not exist", name, si.name)
	}
	return ai, si, v, nil
}

func (s *Server) listStorageInstances(c *call) result {
	ai, err := s.lookupAI(c)
	if err != nil {
		return fail(err)
	}
	items := make([]any, 0, len(ai.storage))
	for _, si := range ai.storage {
		items = append(items, s.renderSI(ai, si))
	}
	return list(c, ai.path()+"/storage_instances", items)
}

func (s *Server) getStorageInstance(c *call) result {
	ai, si, err := s.lookupSI(c)
	if err != nil {
		return fail(err)
	}
	return ok(s.siPath(ai, si), s.renderSI(ai, si))
}

func (s *Server) updateStorageInstance(c *call) result {
	ai, si, aerr := s.lookupSI(c)
	if aerr != nil {
		return fail(aerr)
	}
	var b updateSIBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	var v checks
	if b.AdminState != nil {
		v.enum("admin_state", *b.AdminState, adminStates)
	}
	if b.AccessControlMode != nil {
		v.enum("access_control_mode", *b.AccessControlMode, aclModes)
	}
	if b.Auth != nil {
		v.authBody("auth", b.Auth, true)
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	if b.AccessControlMode != nil && *b.AccessControlMode == "allow_all" && si.accessControlMode == "deny_all" {
		return fail(invalidRequest("access_control_mode can only be changed from allow_all to deny_all"))
	}
	pool := si.ipPool
	if b.IPPool != nil {
		var err *apiError
		if pool, err = s.poolFromPath(b.IPPool); err != nil {
			return fail(err)
		}
	}
	acl, groups := si.acl, si.aclGroups
	if b.ACLPolicy != nil {
		var err *apiError
		if acl, groups, err = s.resolveACL(c, b.ACLPolicy); err != nil {
			return fail(err)
		}
	}
	if b.AdminState != nil {
		if err := s.setSIState(c, ai, si, *b.AdminState, b.Force != nil && *b.Force); err != nil {
			return fail(err)
		}
	}
	if b.ACLPolicy != nil || b.AccessControlMode != nil {
		oldACL, oldGroups, oldMode := si.acl, si.aclGroups, si.accessControlMode
		si.acl, si.aclGroups = acl, groups
		if b.AccessControlMode != nil {
			si.accessControlMode = *b.AccessControlMode
		}
		if err := s.syncACL(c, si); err != nil {
			si.acl, si.aclGroups, si.accessControlMode = oldACL, oldGroups, oldMode
			return fail(err)
		}
	}
	si.ipPool = pool
	if b.Auth != nil {
		si.auth = applyAuth(si.auth, b.Auth)
	}
	return ok(s.siPath(ai, si), s.renderSI(ai, si))
}

func (s *Server) getAccess(c *call) result {
	ai, si, err := s.lookupSI(c)
	if err != nil {
		return fail(err)
	}
	p := s.siPath(ai, si)
	return ok(p+"/access", s.renderAccess(p, si))
}

func (s *Server) getACL(c *call) result {
	ai, si, err := s.lookupSI(c)
	if err != nil {
		return fail(err)
	}
	p := s.siPath(ai, si)
	return ok(p+"/acl_policy", s.renderACL(c.t.path, p, si))
}

// putACL replaces the whole policy; elements must be {path} only.
func (s *Server) putACL(c *call) result {
	ai, si, aerr := s.lookupSI(c)
	if aerr != nil {
		return fail(aerr)
	}
	var b aclBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	acl, groups, err := s.resolveACL(c, &b)
	if err != nil {
		return fail(err)
	}
	oldACL, oldGroups := si.acl, si.aclGroups
	si.acl, si.aclGroups = acl, groups
	if err := s.syncACL(c, si); err != nil {
		si.acl, si.aclGroups = oldACL, oldGroups
		return fail(err)
	}
	p := s.siPath(ai, si)
	return ok(p+"/acl_policy", s.renderACL(c.t.path, p, si))
}

// aclOp is the atomic add/remove of one initiator: 409 on adding a present one, 404 on removing
// an absent one (the calls Datera's DBMP tool makes).
func (s *Server) aclOp(c *call) result {
	ai, si, aerr := s.lookupSI(c)
	if aerr != nil {
		return fail(aerr)
	}
	var b aclOpBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	var v checks
	v.required("op", b.Op != nil)
	v.required("path", b.Path != nil)
	if b.Op != nil {
		v.enum("op", *b.Op, set("add", "remove"))
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	path := *b.Path
	old := si.acl
	switch *b.Op {
	case "add":
		if s.resolveInitiatorPath(c.t.path, path) == nil {
			return fail(notFound("initiator %s does not exist", path))
		}
		if si.aclIndex(path) >= 0 {
			return fail(conflict("initiator %s is already in the acl_policy of %s", path, si.name))
		}
		si.acl = append(slices.Clone(si.acl), path)
	case "remove":
		i := si.aclIndex(path)
		if i < 0 {
			return fail(notFound("initiator %s is not in the acl_policy of %s", path, si.name))
		}
		si.acl = slices.Delete(slices.Clone(si.acl), i, i+1)
	}
	if err := s.syncACL(c, si); err != nil {
		si.acl = old
		return fail(err)
	}
	p := s.siPath(ai, si)
	return ok(p+"/acl_policy", s.renderACL(c.t.path, p, si))
}

// resolveACL checks that every referenced initiator exists; duplicates collapse.
func (s *Server) resolveACL(c *call, b *aclBody) ([]string, []string, *apiError) {
	acl := []string{}
	for i, ref := range b.Initiators {
		if ref.Path == nil {
			return nil, nil, validationFailed(fmt.Sprintf("acl_policy.initiators[%d].path is required", i))
		}
		if s.resolveInitiatorPath(c.t.path, *ref.Path) == nil {
			return nil, nil, notFound("initiator %s does not exist", *ref.Path)
		}
		if !slices.Contains(acl, *ref.Path) {
			acl = append(acl, *ref.Path)
		}
	}
	if len(b.InitiatorGroups) > 0 {
		// The simulator has no initiator groups, so every reference dangles.
		ref := b.InitiatorGroups[0]
		if ref.Path == nil {
			return nil, nil, validationFailed("acl_policy.initiator_groups[0].path is required")
		}
		return nil, nil, notFound("initiator_group %s does not exist", *ref.Path)
	}
	return acl, []string{}, nil
}

func (s *Server) listVolumes(c *call) result {
	ai, si, err := s.lookupSI(c)
	if err != nil {
		return fail(err)
	}
	p := s.siPath(ai, si)
	items := make([]any, 0, len(si.volumes))
	for _, v := range si.volumes {
		items = append(items, s.renderVolume(p, si, v))
	}
	return list(c, p+"/volumes", items)
}

func (s *Server) getVolume(c *call) result {
	ai, si, v, err := s.lookupVolume(c)
	if err != nil {
		return fail(err)
	}
	p := s.siPath(ai, si)
	return ok(p+"/volumes/"+v.name, s.renderVolume(p, si, v))
}

// updateVolume resizes (grow only: the API refuses shrinking), and changes replica
// count or placement. Works online (CSI) and offline (Cinder).
func (s *Server) updateVolume(c *call) result {
	ai, si, vol, aerr := s.lookupVolume(c)
	if aerr != nil {
		return fail(aerr)
	}
	var b updateVolBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	var v checks
	if b.Size != nil {
		v.rangeInt("size", *b.Size, minSize, maxSize)
	}
	if b.ReplicaCount != nil {
		v.rangeInt("replica_count", *b.ReplicaCount, minReplica, maxReplica)
	}
	if b.PlacementMode != nil {
		v.enum("placement_mode", *b.PlacementMode, placementModes)
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	if b.RestorePoint != nil {
		return fail(invalidRequest("restore_point is not supported by this simulator"))
	}
	if b.Size != nil && *b.Size < vol.size {
		return fail(invalidRequest("volume %s is %d GiB; shrinking to %d GiB is not supported", vol.name, vol.size, *b.Size))
	}
	if b.Size != nil && *b.Size > vol.size {
		if err := s.growBacking(c, ai, si, vol, *b.Size); err != nil {
			return fail(err)
		}
		vol.size = *b.Size
	}
	if b.ReplicaCount != nil {
		vol.replicaCount = int(*b.ReplicaCount)
	}
	if b.PlacementMode != nil {
		vol.placementMode = *b.PlacementMode
	}
	p := s.siPath(ai, si)
	return ok(p+"/volumes/"+vol.name, s.renderVolume(p, si, vol))
}

func (s *Server) getPerf(c *call) result {
	ai, si, vol, err := s.lookupVolume(c)
	if err != nil {
		return fail(err)
	}
	if vol.perf == nil {
		return fail(notFound("performance_policy of volume %s does not exist", vol.name))
	}
	vp := s.siPath(ai, si) + "/volumes/" + vol.name
	return ok(vp+"/performance_policy", renderPerf(vp, vol.perf))
}

func (s *Server) createPerf(c *call) result {
	return s.writePerf(c, true)
}

func (s *Server) updatePerf(c *call) result {
	return s.writePerf(c, false)
}

// writePerf is POST (create: the policy must not exist yet) and PUT (update: it must exist)
// of a volume's performance_policy; both validate the body the same way.
func (s *Server) writePerf(c *call, create bool) result {
	ai, si, vol, aerr := s.lookupVolume(c)
	if aerr != nil {
		return fail(aerr)
	}
	var b perfBody
	if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	var v checks
	v.perf("performance_policy", &b)
	if err := v.err(); err != nil {
		return fail(err)
	}
	switch {
	case create && vol.perf != nil:
		return fail(conflict("performance_policy of volume %s already exists", vol.name))
	case create:
		vol.perf = &perfPolicy{}
	case vol.perf == nil:
		return fail(notFound("performance_policy of volume %s does not exist", vol.name))
	}
	applyPerf(vol.perf, &b)
	vp := s.siPath(ai, si) + "/volumes/" + vol.name
	return ok(vp+"/performance_policy", renderPerf(vp, vol.perf))
}

func (s *Server) deletePerf(c *call) result {
	ai, si, vol, err := s.lookupVolume(c)
	if err != nil {
		return fail(err)
	}
	if vol.perf == nil {
		return fail(notFound("performance_policy of volume %s does not exist", vol.name))
	}
	vp := s.siPath(ai, si) + "/volumes/" + vol.name
	out := renderPerf(vp, vol.perf)
	vol.perf = nil
	return ok(vp+"/performance_policy", out)
}

func (v *checks) perf(field string, b *perfBody) {
	limits := []struct {
		name  string
		value *int64
		max   int64
	}{
		{"total_iops_max", b.TotalIOPSMax, maxIOPS},
		{"read_iops_max", b.ReadIOPSMax, maxIOPS},
		{"write_iops_max", b.WriteIOPSMax, maxIOPS},
		{"total_bandwidth_max", b.TotalBandwidthMax, maxBandwidthKiB},
		{"read_bandwidth_max", b.ReadBandwidthMax, maxBandwidthKiB},
		{"write_bandwidth_max", b.WriteBandwidthMax, maxBandwidthKiB},
	}
	for _, l := range limits {
		if l.value != nil {
			v.rangeInt(field+"."+l.name, *l.value, 0, l.max)
		}
	}
}

func applyPerf(p *perfPolicy, b *perfBody) {
	set := func(dst *int64, src *int64) {
		if src != nil {
			*dst = *src
		}
	}
	set(&p.TotalIOPSMax, b.TotalIOPSMax)
	set(&p.ReadIOPSMax, b.ReadIOPSMax)
	set(&p.WriteIOPSMax, b.WriteIOPSMax)
	set(&p.TotalBandwidthMax, b.TotalBandwidthMax)
	set(&p.ReadBandwidthMax, b.ReadBandwidthMax)
	set(&p.WriteBandwidthMax, b.WriteBandwidthMax)
}

// authBody checks CHAP settings: user names like other names, passwords 12–16 characters.
func (v *checks) authBody(field string, b *authBody, requireType bool) {
	if requireType {
		v.required(field+".type", b.Type != nil)
	}
	if b.Type != nil {
		v.enum(field+".type", *b.Type, authTypes)
	}
	if u := b.InitiatorUserName; u != nil && *u != "" {
		v.pattern(field+".initiator_user_name", *u, reName)
	}
	if u := b.TargetUserName; u != nil && *u != "" {
		v.pattern(field+".target_user_name", *u, reName)
	}
	for _, p := range []struct {
		name  string
		value *string
	}{{"initiator_pswd", b.InitiatorPswd}, {"target_pswd", b.TargetPswd}} {
		if p.value != nil && *p.value != "" && (len(*p.value) < chapMinLen || len(*p.value) > chapMaxLen) {
			*v = append(*v, fmt.Sprintf("%s.%s: must be %d-%d characters", field, p.name, chapMinLen, chapMaxLen))
		}
	}
}

func applyAuth(a authSettings, b *authBody) authSettings {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&a.typ, b.Type)
	set(&a.initiatorUser, b.InitiatorUserName)
	set(&a.initiatorPwd, b.InitiatorPswd)
	set(&a.targetUser, b.TargetUserName)
	set(&a.targetPwd, b.TargetPswd)
	return a
}
