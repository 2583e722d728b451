package lists

import (
	"embed"
	"fmt"
	"net/netip"
)

// catalogueFiles holds the built-in lists, so a router with no working download (the
// list's own host may well be blocked) still knows what to tunnel from the first start.
//
//go:embed catalogue/*.txt catalogue/*.domains
var catalogueFiles embed.FS

// Entry is one service of the built-in catalogue.
type Entry struct {
	Name        string // the UCI section name: config service 'telegram'
	Description string
	// UpdateURL is where updates are fetched; empty when the service publishes no list,
	// in which case the embedded prefixes are used as they are.
	UpdateURL string
	// Source says where the embedded prefixes come from (a URL, an AS number).
	Source string
	// Date is the day the embedded prefixes were taken (YYYY-MM-DD).
	Date     string
	Prefixes []netip.Prefix // merged, IPv4 first; none when the operator publishes none
	// Domains select the service by name through dnsmasq (subdomains match), sorted.
	// Their source is named in the header of catalogue/NAME.domains.
	Domains []string
}

// catalogueEntry is an Entry before its file is read.
type catalogueEntry struct {
	Entry
	file string // prefixes; "" when the service publishes none
}

func catalogueTable() []catalogueEntry {
	return []catalogueEntry{
		{
			Entry: Entry{
				Name:        "telegram",
				Description: "Telegram: the ranges Telegram publishes for its data centres and media servers",
				UpdateURL:   "https://core.telegram.org/resources/cidr.txt",
				Source:      "https://core.telegram.org/resources/cidr.txt",
				Date:        "2026-11-24",
			},
			file: "catalogue/telegram.txt",
		},
		{
			Entry: Entry{
				Name: "whatsapp",
				Description: "WhatsApp: all of Meta's network AS32934, which also carries " +
					"Facebook, Instagram and Messenger",
				Source: "AS32934 (Meta Platforms) as announced in the bgp.tools table, via " +
					"github.com/itdoginfo/allow-domains Subnets/IPv{4,6}/meta.lst @7a32e1c",
				Date: "2026-08-17",
			},
			file: "catalogue/whatsapp.txt",
		},
		{
			Entry: Entry{
				Name: "signal",
				Description: "Signal: by domain only (no published ranges; its servers " +
					"are on shared cloud ranges)",
				Source: "domains: Signal's documentation and clients (catalogue/signal.domains)",
				Date:   "2026-11-30",
			},
		},
		{
			Entry: Entry{
				Name: "discord",
				Description: "Discord: by domain only (its web, API and voice sit on " +
					"Cloudflare's, i3D.net's and Google Cloud's shared ranges)",
				Source: "domains: Discord's documentation and clients (catalogue/discord.domains)",
				Date:   "2026-11-30",
			},
		},
		{
			Entry: Entry{
				Name:        "viber",
				Description: "Viber: by domain only (hosted on Amazon, no published ranges)",
				Source:      "domains: Viber's documentation and clients (catalogue/viber.domains)",
				Date:        "2026-11-30",
			},
		},
	}
}

// Catalogue returns the built-in services in a fixed order, each with its prefixes.
func Catalogue() []Entry {
	table := catalogueTable()
	out := make([]Entry, 0, len(table))
	for _, c := range table {
		e, err := c.load()
		if err != nil {
			// The files are part of the binary and checked by the tests.
			panic(err)
		}
		out = append(out, e)
	}
	return out
}

// ServiceNames lists the names of the built-in services, in catalogue order: the only
// names a `config service` section may have.
func ServiceNames() []string {
	table := catalogueTable()
	out := make([]string, 0, len(table))
	for _, c := range table {
		out = append(out, c.Name)
	}
	return out
}

// Lookup returns the built-in service called name.
func Lookup(name string) (Entry, bool) {
	for _, c := range catalogueTable() {
		if c.Name == name {
			e, err := c.load()
			if err != nil {
				panic(err)
			}
			return e, true
		}
	}
	return Entry{}, false
}

func (c catalogueEntry) load() (Entry, error) {
	e := c.Entry
	if c.file != "" {
		data, err := catalogueFiles.ReadFile(c.file)
		if err != nil {
			return Entry{}, fmt.Errorf("catalogue %s: %w", c.Name, err)
		}
		ps, err := Parse(data, ParseOptions{})
		if err != nil {
			return Entry{}, fmt.Errorf("catalogue %s: %s: %w", c.Name, c.file, err)
		}
		e.Prefixes = Merge(ps)
	}
	domainFile := "catalogue/" + c.Name + ".domains"
	data, err := catalogueFiles.ReadFile(domainFile)
	if err != nil {
		return Entry{}, fmt.Errorf("catalogue %s: %w", c.Name, err)
	}
	if e.Domains, err = ParseDomains(data, DomainOptions{}); err != nil {
		return Entry{}, fmt.Errorf("catalogue %s: %s: %w", c.Name, domainFile, err)
	}
	return e, nil
}
