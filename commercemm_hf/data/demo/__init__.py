"""The SYNTHETIC demo catalog, one job a file (its front door is `commercemm_hf.data.demo_catalog`):

* `vocabulary`: taxonomy, colours, patterns, materials, brands, product-type words, `DemoProductSpec`;
* `drawings`: the silhouette of each of the 24 product types;
* `photography`: materials as texture, the product sprite, studio shots, other views, tagged posts, PNG encoding;
* `texts`: titles, descriptions, post captions and multilingual search queries from templates;
* `catalog`: the plan of every product's attributes and the assembly into `train` / `validation` / `test`.

The rows it produces follow `commercemm_hf.data.schema`, which converts them to image-text and Omni rows.
"""
