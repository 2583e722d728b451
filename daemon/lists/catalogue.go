package lists

import (
	"embed"
	"fmt"
	"net/netip"
)

// catalogueFiles holds the built-in lists, so a router with no working download (the
// list's own host may well be blocked) still knows what to tunnel from the first start.
//
//go:embed catalogue/*.txt
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
	Prefixes []netip.Prefix // merged, IPv4 first
}

// catalogueEntry is an Entry before its file is read.
type catalogueEntry struct {
	Entry
	file string
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
	data, err := catalogueFiles.ReadFile(c.file)
	if err != nil {
		return Entry{}, fmt.Errorf("catalogue %s: %w", c.Name, err)
	}
	ps, err := Parse(data, ParseOptions{})
	if err != nil {
		return Entry{}, fmt.Errorf("catalogue %s: %s: %w", c.Name, c.file, err)
	}
	e := c.Entry
	e.Prefixes = Merge(ps)
	return e, nil
}
