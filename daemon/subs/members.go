package subs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tgtun/tgtun/daemon/config"
	"github.com/tgtun/tgtun/daemon/links"
)

// Member is one link of a subscription as a proxy of the pool.
type Member struct {
	// Name is a section-like name, unique among the configuration's sections and the
	// other members: the subscription's name and the link's #fragment made a section
	// name (links.SectionName), else the subscription's name and a number. The prefix
	// keeps one subscription's refresh from renaming another's members.
	Name  string
	Label string // the link's #fragment as the provider wrote it (printable)
	Sub   string // the subscription's name
	// Proxy is the link's `config proxy` section, checked as `config check` checks one
	// (with the daemon's rules: the proxy package must be able to build it).
	Proxy config.Proxy
}

// Skip is a link that did not become a member, and why (never with its secrets).
type Skip struct {
	Line   int // 1-based, among the body's links
	Reason string
}

func (s Skip) String() string { return fmt.Sprintf("link %d: %s", s.Line, s.Reason) }

// Result is what one subscription's links gave.
type Result struct {
	Members  []Member
	Skipped  []Skip
	Filtered int // left out by include/exclude
}

// Build turns a subscription's links into members: each link is read by links.Parse
// (the parser of `tgtun proxy import`) and its section checked by config.ParseWith with
// rules, as a section of /etc/config/tgtun would be. A link that fails either is
// skipped with the reason; so are links past MaxMembers. Filters apply to the label.
// taken holds the names in use (the configuration's sections, earlier members) and
// receives the new ones.
func Build(sub config.Subscription, lines []string, taken map[string]bool, rules config.Rules) Result {
	var res Result
	for i, line := range lines {
		lab := label(line)
		if !(filters{sub.Include, sub.Exclude}).wants(lab) {
			res.Filtered++
			continue
		}
		if len(res.Members) >= MaxMembers {
			res.Skipped = append(res.Skipped, Skip{i + 1, fmt.Sprintf("more than %d usable links; the rest are left out", MaxMembers)})
			continue
		}
		if len(line) > maxLineBytes {
			res.Skipped = append(res.Skipped, Skip{i + 1, fmt.Sprintf("longer than %d bytes", maxLineBytes)})
			continue
		}
		p, err := links.Parse(line)
		if err != nil {
			res.Skipped = append(res.Skipped, Skip{i + 1, err.Error()})
			continue
		}
		base := sub.Name + "_" + strconv.Itoa(len(res.Members)+1)
		if p.Name != "" {
			base = sub.Name + "_" + p.Name
		}
		name := uniqueName(base, taken)
		section := p.UCI(name) + fmt.Sprintf("\toption priority '%d'\n", sub.Priority)
		cfg, _, err := config.ParseWith("subscription '"+sub.Name+"'", strings.NewReader(section), rules)
		if err != nil {
			res.Skipped = append(res.Skipped, Skip{i + 1, configReason(err)})
			continue
		}
		if len(cfg.Proxies) != 1 {
			res.Skipped = append(res.Skipped, Skip{i + 1, "the link gives no usable proxy"})
			continue
		}
		taken[name] = true
		px := cfg.Proxies[0]
		px.Line = i + 1
		res.Members = append(res.Members, Member{Name: name, Label: lab, Sub: sub.Name, Proxy: px})
	}
	return res
}

// wants applies include (any of them, when set) and exclude (none of them) to a
// member's label, ignoring case.
func (f filters) wants(label string) bool {
	l := strings.ToLower(label)
	if len(f.include) > 0 && !containsAny(l, f.include) {
		return false
	}
	return !containsAny(l, f.exclude)
}

type filters struct{ include, exclude []string }

func containsAny(s string, subs []string) bool {
	for _, x := range subs {
		if strings.Contains(s, strings.ToLower(x)) {
			return true
		}
	}
	return false
}

// uniqueName is base, with _2, _3 … appended until no section or member has it.
func uniqueName(base string, taken map[string]bool) string {
	name := base
	for i := 2; taken[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	return name
}

// configReason is config's verdict on a link's section, without file and line.
func configReason(err error) string {
	var errs config.Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		return err.Error()
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Msg
	}
	return strings.Join(msgs, "; ")
}
