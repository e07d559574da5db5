"""LiDAR point clouds: KITTI readers, rotated boxes, synthetic scenes, Point-GNN detection and its CLI."""
