//! An image's soft tokens as gemma-rs computes them, for comparing with
//! another engine (scripts/check-mmproj-llama-cpp.sh compares llama.cpp's
//! libmtmd): writes `OUT.rgb` (width and height as u32 LE, then the decoded
//! RGB bytes) and `OUT.f32` (`[tokens, hidden]` f32 LE), and prints the
//! encode time.
//!   [IMAGE_TOKENS=N] cargo run --release -p gemma --example image_embeddings -- MODEL [MMPROJ] IMAGE OUT
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, mmproj, image, out) = match args.as_slice() {
        [m, i, o] => (m, None, i, o),
        [m, p, i, o] => (m, Some(p.into()), i, o),
        _ => return Err("usage: image_embeddings MODEL [MMPROJ] IMAGE OUT".into()),
    };
    // Gemma 4's soft-token budget, when the mmproj does not match the default 280.
    let image_tokens = std::env::var("IMAGE_TOKENS").ok().and_then(|v| v.parse().ok());
    let g = gemma::Gemma::load_with(model, &gemma::LoadOptions { mmproj, image_tokens, ..Default::default() }, &mut |_, _| {})?;
    let bytes = std::fs::read(image)?;
    let img = gemma_formats::image_file::decode_rgb8(&bytes, image)?;
    let mut rgb = Vec::with_capacity(8 + img.data.len());
    rgb.extend_from_slice(&(img.width as u32).to_le_bytes());
    rgb.extend_from_slice(&(img.height as u32).to_le_bytes());
    rgb.extend_from_slice(&img.data);
    std::fs::write(format!("{out}.rgb"), rgb)?;
    let t0 = Instant::now();
    let enc = g.encode_image(&bytes, image, false)?;
    let secs = t0.elapsed().as_secs_f64();
    let rows = &enc.runs[0];
    std::fs::write(format!("{out}.f32"), rows.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
    println!("{{\"tokens\": {}, \"values\": {}, \"encode_seconds\": {secs:.4}}}", rows.len() / g.model.config.hidden_size, rows.len());
    Ok(())
}
