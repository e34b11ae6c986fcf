package cluster

import cmap "github.com/orcaman/concurrent-map"

// registryShards is the number of shards in each of the 1,024 buckets of
// protoactor's process registry (actor.SliceMap: 1,024 concurrent maps of
// concurrent-map's SHARD_COUNT shards each; its default, 32, makes 32,768
// Go maps). Every live activation and every pending future is an entry in
// one of them, and a Go map keeps its storage once touched: with 32,768
// maps a node's first tens of thousands of users each touch a map of their
// own (one 8-slot group, ~288 bytes, plus the map header), ~9 MiB in all
// once every map is touched. One shard per bucket keeps 1,024 maps, whose
// entries are dense from the first thousand users, and 1,024 locks are
// still far more than the cores that contend for them.
//
// concurrent-map reads SHARD_COUNT at every call, so it must not change
// once a map exists: this package's init runs before any actor system is
// made (every one is made at run time, by a package that imports this
// one), and nothing else in the process uses concurrent-map (protoactor's
// cluster PID cache, its other user, is replaced by pidcache.go).
const registryShards = 1

func init() { cmap.SHARD_COUNT = registryShards }
