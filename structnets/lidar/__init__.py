"""LiDAR point clouds: KITTI readers, rotated boxes, synthetic scenes, Point-GNN detection and its CLI.

It needs shapely (rotated-box overlaps), which the ``[lidar]`` extra installs
(``pip install 'structnets[lidar]'``).
"""

try:
    import shapely  # noqa: F401
except ImportError as error:  # the core install has no shapely: say which extra brings it
    raise ImportError(
        "structnets.lidar needs shapely, which the [lidar] extra installs: pip install 'structnets[lidar]'",
        name="shapely",
    ) from error
