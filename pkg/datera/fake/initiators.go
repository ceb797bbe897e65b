package fake

import (
	"sort"
	"strconv"
	"strings"
)

type createInitiatorBody struct {
	ID    *string `json:"id"`
	Name  *string `json:"name"`
	Force *bool   `json:"force"` // v2.2 only
}

// visibleTenants lists a tenant and its ancestors, nearest first: initiators and templates are
// inherited from parent tenants.
func visibleTenants(path string) []string {
	out := []string{path}
	for p := path; strings.Count(p, "/") > 1; {
		p = p[:strings.LastIndex(p, "/")]
		out = append(out, p)
	}
	return out
}

func (s *Server) findInitiator(tenantPath, id string) *initiator {
	for _, tp := range visibleTenants(tenantPath) {
		if t := s.tenants[tp]; t != nil {
			if in := t.initiators[id]; in != nil {
				return in
			}
		}
	}
	return nil
}

// resolveInitiatorPath resolves "/initiators/<iqn>" as seen from a tenant.
func (s *Server) resolveInitiatorPath(tenantPath, path string) *initiator {
	id, found := strings.CutPrefix(path, "/initiators/")
	if !found {
		return nil
	}
	return s.findInitiator(tenantPath, id)
}

func (s *Server) listInitiators(c *call) result {
	seen := map[string]bool{}
	var ins []*initiator
	for _, tp := range visibleTenants(c.t.path) {
		for id, in := range s.tenants[tp].initiators {
			if !seen[id] {
				seen[id] = true
				ins = append(ins, in)
			}
		}
	}
	sort.Slice(ins, func(i, j int) bool { return ins[i].id < ins[j].id })
	items := make([]any, 0, len(ins))
	for _, in := range ins {
		items = append(items, s.renderInitiator(c.version, in))
	}
	return list(c, "/initiators", items)
}

func (s *Server) getInitiator(c *call) result {
	id := c.r.PathValue("id")
	in := s.findInitiator(c.t.path, id)
	if in == nil {
		return fail(notFound("initiator %s does not exist", id))
	}
	return ok(in.path(), s.renderInitiator(c.version, in))
}

func (s *Server) createInitiator(c *call) result {
	var b createInitiatorBody
	if isForm(c.r) {
		vals, err := readForm(c.r, "id", "name", "force")
		if err != nil {
			return fail(err)
		}
		if vals.Has("id") {
			v := vals.Get("id")
			b.ID = &v
		}
		if vals.Has("name") {
			v := vals.Get("name")
			b.Name = &v
		}
		if vals.Has("force") {
			f, perr := strconv.ParseBool(vals.Get("force"))
			if perr != nil {
				return fail(validationFailed("force: must be a boolean"))
			}
			b.Force = &f
		}
	} else if err := decodeJSON(c.r, &b); err != nil {
		return fail(err)
	}
	if err := v22Only(c, map[string]bool{"force": b.Force != nil}); err != nil {
		return fail(err)
	}
	var v checks
	v.required("id", b.ID != nil)
	v.required("name", b.Name != nil)
	if b.ID != nil {
		v.initiatorID("id", *b.ID)
	}
	if b.Name != nil {
		v.pattern("name", *b.Name, reInitiatorName)
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	if c.t.initiators[*b.ID] != nil {
		return fail(conflict("initiator %s already exists", *b.ID))
	}
	forced := b.Force != nil && *b.Force
	// DAT-15931: a sub-tenant's initiators, and the first of any tenant, need force on v2.2.
	if c.version != "v2.1" && !forced && !s.opts.AllowUnforcedInitiators &&
		(c.t.path != "/root" || len(c.t.initiators) == 0) {
		return fail(invalidRequest("creating initiator %s in tenant %s may affect inherited initiators; set force to override this warning",
			*b.ID, c.t.path))
	}
	in := &initiator{id: *b.ID, name: *b.Name, tenant: c.t.path}
	c.t.initiators[in.id] = in
	return ok(in.path(), s.renderInitiator(c.version, in))
}

func (s *Server) deleteInitiator(c *call) result {
	id := c.r.PathValue("id")
	in := c.t.initiators[id]
	if in == nil {
		return fail(notFound("initiator %s does not exist in tenant %s", id, c.t.path))
	}
	for tp, t := range s.tenants {
		if tp != c.t.path && !strings.HasPrefix(tp, c.t.path+"/") {
			continue
		}
		for _, ai := range t.appInstances {
			for _, si := range ai.storage {
				if si.aclIndex(in.path()) >= 0 && s.resolveInitiatorPath(tp, in.path()) == in {
					return fail(invalidRequest("initiator %s is in the acl_policy of %s/%s; remove it there first", id, ai.name, si.name))
				}
			}
		}
	}
	delete(c.t.initiators, id)
	return ok(in.path(), s.renderInitiator(c.version, in))
}
