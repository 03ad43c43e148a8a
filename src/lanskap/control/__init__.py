"""Structure control: ControlNet units, their preprocessors and models, and depth maps.

``units`` says what a unit is (the sd-webui-controlnet extension's fields, names and infotext),
``preprocess`` turns a picture into a control map, ``models`` finds and loads ControlNet files,
``depth`` estimates depth maps, and ``hook`` feeds the units' residuals to the UNet while the
engine denoises.
"""
