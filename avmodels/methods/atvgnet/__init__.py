"""ATVGnet (Chen et al., CVPR 2019; lelechen63/ATVGnet): audio -> landmarks (AT-net) -> talking video (VG-net).

``networks.py`` holds the three networks with the official parameter counts; the two training stages, the
landmark PCA and sampling build on them (README, "ATVGnet").
"""
