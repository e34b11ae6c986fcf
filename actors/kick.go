package actors

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// PolicyMode names a kick policy (SPEC "Device sessions and kick policy").
type PolicyMode string

const (
	// PolicySingle: a new login kicks every other session of the user.
	PolicySingle PolicyMode = "single"
	// PolicyPerClass: at most Limits[class] sessions per platform class;
	// the oldest login of the class is kicked.
	PolicyPerClass PolicyMode = "per_class"
	// PolicyTag: at most one session per (user, tag); untagged sessions
	// are unlimited.
	PolicyTag PolicyMode = "tag"
)

// Policy decides which sessions a new login kicks. The zero value is
// per_class with the default limits.
type Policy struct {
	Mode   PolicyMode
	Limits map[Class]int // per_class; a class missing here gets its default
}

// DefaultLimits are the per-class limits when none are configured.
var DefaultLimits = map[Class]int{
	ClassMobile: 1, ClassPad: 1, ClassDesktop: 1, ClassWeb: 10, ClassMiniprogram: 1,
}

func (p Policy) withDefaults() Policy {
	if p.Mode == "" {
		p.Mode = PolicyPerClass
	}
	limits := make(map[Class]int, len(DefaultLimits))
	for c, n := range DefaultLimits {
		limits[c] = n
	}
	for c, n := range p.Limits {
		limits[c] = n
	}
	p.Limits = limits
	return p
}

// Validate reports every problem at once.
func (p Policy) Validate() error {
	var errs []error
	switch p.Mode {
	case "", PolicySingle, PolicyPerClass, PolicyTag:
	default:
		errs = append(errs, fmt.Errorf("kick policy %q: use single, per_class or tag", p.Mode))
	}
	for c, n := range p.Limits {
		if _, ok := DefaultLimits[c]; !ok {
			errs = append(errs, fmt.Errorf("kick policy: unknown platform class %q", c))
		}
		if n < 1 || n > 1000 {
			errs = append(errs, fmt.Errorf("kick policy: limit %d for %s must be 1-1000", n, c))
		}
	}
	return errors.Join(errs...)
}

// ParseLimits reads "mobile=1,web=4" into a limits map.
func ParseLimits(s string) (map[Class]int, error) {
	out := map[Class]int{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || err != nil {
			return nil, fmt.Errorf("class limit %q: want class=number", part)
		}
		out[Class(strings.TrimSpace(k))] = n
	}
	return out, nil
}

// String renders limits in a stable order (for logs and docs).
func (p Policy) String() string {
	p = p.withDefaults()
	classes := make([]string, 0, len(p.Limits))
	for c := range p.Limits {
		classes = append(classes, string(c))
	}
	sort.Strings(classes)
	var b strings.Builder
	b.WriteString(string(p.Mode))
	if p.Mode == PolicyPerClass {
		for i, c := range classes {
			if i == 0 {
				b.WriteString(" ")
			} else {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%s=%d", c, p.Limits[Class(c)])
		}
	}
	return b.String()
}

// liveLogin is what the kick decision needs to know of a session.
type liveLogin struct {
	key    sessionKey
	device string
	class  Class
	tag    string
	order  uint64 // login order within the actor: smaller is older
}

// newLogin is the login being decided.
type newLogin struct {
	device    string
	class     Class
	tag       string
	noKick    bool
	reconnect bool
}

// kickDecision is the outcome: sessions to replace (same device), sessions
// to kick (policy), or a conflict refusing the login.
type kickDecision struct {
	replace  []sessionKey // the same device's older sessions
	kick     []sessionKey // other devices, oldest first
	conflict bool
}

// decideLogin applies the policy. The same device ID always replaces its
// own older session. Other sessions the policy pushes out are kicked,
// oldest first — unless the login asked not to kick, or is an automatic
// reconnect: then the login fails with a conflict and nothing changes.
func decideLogin(p Policy, live []liveLogin, n newLogin) kickDecision {
	var d kickDecision
	var others []liveLogin
	for _, l := range live {
		if l.device == n.device {
			d.replace = append(d.replace, l.key)
		} else {
			others = append(others, l)
		}
	}
	slices.SortFunc(others, func(a, b liveLogin) int { return cmpUint(a.order, b.order) })
	switch p.Mode {
	case PolicySingle:
		for _, l := range others {
			d.kick = append(d.kick, l.key)
		}
	case PolicyTag:
		if n.tag != "" {
			for _, l := range others {
				if l.tag == n.tag {
					d.kick = append(d.kick, l.key)
				}
			}
		}
	default: // per_class
		limit := p.Limits[n.class]
		if limit < 1 {
			limit = 1
		}
		var same []liveLogin
		for _, l := range others {
			if l.class == n.class {
				same = append(same, l)
			}
		}
		for i := 0; i < len(same)-(limit-1); i++ {
			d.kick = append(d.kick, same[i].key)
		}
	}
	if len(d.kick) > 0 && (n.noKick || n.reconnect) {
		return kickDecision{conflict: true}
	}
	return d
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// enforce returns the sessions to end so that live obeys p: the oldest
// logins beyond each limit (per_class), every session but the newest
// (single), or all but the newest of each tag (tag).
func enforce(p Policy, live []liveLogin) []sessionKey {
	sorted := slices.Clone(live)
	slices.SortFunc(sorted, func(a, b liveLogin) int { return cmpUint(b.order, a.order) }) // newest first
	var out []sessionKey
	switch p.Mode {
	case PolicySingle:
		for i, l := range sorted {
			if i > 0 {
				out = append(out, l.key)
			}
		}
	case PolicyTag:
		seen := map[string]bool{}
		for _, l := range sorted {
			if l.tag == "" {
				continue
			}
			if seen[l.tag] {
				out = append(out, l.key)
			}
			seen[l.tag] = true
		}
	default:
		count := map[Class]int{}
		for _, l := range sorted {
			count[l.class]++
			if count[l.class] > max(p.Limits[l.class], 1) {
				out = append(out, l.key)
			}
		}
	}
	slices.Reverse(out) // oldest first
	return out
}
