"""A graph's adjacency grouped by destination, for work that must not touch the whole graph at once: gathering
the neighbourhood of a few nodes to serve them, sampling neighbours for mini-batch training (GraphSAGE,
Hamilton et al. 2017: at most `fanout` in-neighbours of each node per hop), and running a GNN one layer at a
time over chunks of nodes. Each costs what the nodes' edges hold, not what the graph holds.
"""

from __future__ import annotations

import torch


class NeighbourIndex:
    """A graph's edges grouped by destination (compressed sparse rows): node v's in-neighbours are
    `sources[offsets[v]:offsets[v + 1]]`. Built once; reading a node's neighbours then costs its degree."""

    def __init__(self, edge_index: torch.Tensor, num_nodes: int) -> None:
        destinations = edge_index[1]
        self.sources = edge_index[0][torch.argsort(destinations, stable=True)].contiguous()
        self.offsets = torch.zeros(num_nodes + 1, dtype=torch.int64)
        self.offsets[1:] = torch.cumsum(torch.bincount(destinations, minlength=num_nodes), 0)
        self.num_nodes = num_nodes
        self.in_degree = self.offsets[1:] - self.offsets[:-1]

    def in_edges(self, nodes: torch.Tensor, fanout: int | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(sources, destinations) of the edges into `nodes`: all of them, or with `fanout` at most that many
        per node, drawn uniformly without replacement with `generator`."""
        starts = self.offsets[nodes]
        counts = self.offsets[nodes + 1] - starts
        firsts = torch.cumsum(counts, 0) - counts  # where each node's edges begin in the output
        rank = torch.arange(int(counts.sum())) - torch.repeat_interleave(firsts, counts)  # position within its node
        positions = rank + torch.repeat_interleave(starts, counts)
        destinations = torch.repeat_interleave(nodes, counts)
        if fanout is not None and bool((counts > fanout).any()):
            # a random order within each node's edges (random keys, then a stable sort by node), the first `fanout`
            keys = torch.rand(len(positions), generator=generator)
            order = torch.argsort(keys)
            order = order[torch.argsort(torch.repeat_interleave(torch.arange(len(nodes)), counts)[order], stable=True)]
            keep = rank < fanout  # rank is unchanged by the shuffle: it counts positions within each node
            return self.sources[positions[order][keep]], destinations[keep]
        return self.sources[positions], destinations

    def neighbourhood(
        self, nodes: torch.Tensor, hops: int, fanouts: list[int] | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What a GNN of `hops` layers needs to classify `nodes`: the nodes reached in `hops` hops (the distinct
        `nodes` first), the edges it follows (relabelled to positions in that node list) and the positions of
        `nodes`. Without `fanouts` every edge into the nodes within `hops - 1` hops; with them, hop h follows at
        most `fanouts[h]` edges into each node it reached last (GraphSAGE's sampling)."""
        seen = torch.zeros(self.num_nodes, dtype=torch.bool)
        targets = torch.unique(nodes)
        seen[targets] = True
        order, frontier, followed = [targets], targets, []
        for hop in range(hops):
            sources, destinations = self.in_edges(frontier, None if fanouts is None else fanouts[hop], generator)
            followed.append((sources, destinations))
            reached = torch.unique(sources)
            frontier = reached[~seen[reached]]
            seen[frontier] = True
            order.append(frontier)
        subset = torch.cat(order)
        sources = torch.cat([s for s, _ in followed])
        destinations = torch.cat([d for _, d in followed])
        position = torch.full((self.num_nodes,), -1, dtype=torch.int64)
        position[subset] = torch.arange(len(subset))
        return subset, torch.stack([position[sources], position[destinations]]), position[nodes]
